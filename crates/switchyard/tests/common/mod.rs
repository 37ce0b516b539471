//! What several of the binary's tests share: Keystone request bodies and the
//! lab's written clouds.yaml.

#![allow(dead_code)]

use serde_json::{Value, json};

/// A password-auth request scoped to `project` (domains by name, Default).
pub fn password_auth(user: &str, password: &str, project: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}
    }})
}

/// The admin's password in a clouds.yaml `lab up --clouds-yaml` wrote (its
/// first cloud, `switchyard`, is the admin's).
pub fn lab_admin_password(clouds_yaml: &std::path::Path) -> String {
    let yaml = std::fs::read_to_string(clouds_yaml).expect("clouds.yaml");
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("admin password")
        .trim_matches('"')
        .to_string()
}
