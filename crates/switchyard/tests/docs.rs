//! The README and docs/*.md are for operators: every relative link (and its
//! `#anchor`) must resolve inside the repository, no link may leave it, a
//! repository path named in code (`crates/…/tests/x.rs`) must exist, and no
//! development-process label ("issue 4", "session 8") may remain. Run by
//! `cargo test`, so a renamed file or heading breaks the build, not a reader.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// README.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut v = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    v.extend(docs);
    v
}

/// A document's prose lines (fenced code blocks dropped), with line numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, l));
        }
    }
    out
}

/// A line split into text outside inline code and the code spans.
fn split_code(line: &str) -> (String, Vec<&str>) {
    let mut text = String::new();
    let mut code = Vec::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            text.push_str(part);
            text.push(' ');
        } else {
            code.push(part);
        }
    }
    (text, code)
}

/// The targets of `[text](target)` links in prose text.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    // Reference definitions, `[name]: target`.
    let t = text.trim_start();
    if t.starts_with('[')
        && let Some(i) = t.find("]:")
    {
        out.push(t[i + 2..].trim().to_string());
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// to hyphens; repeated headings get `-1`, `-2`, ….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, l) in prose(text) {
        let Some(h) = l.strip_prefix('#') else {
            continue;
        };
        let h = h.trim_start_matches('#').trim();
        let base: String = h
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut slug = base.clone();
        let mut n = 0;
        while seen.contains(&slug) {
            n += 1;
            slug = format!("{base}-{n}");
        }
        seen.insert(slug);
    }
    seen
}

/// Problems with one document's links and named paths.
fn link_problems(doc: &Path) -> Vec<String> {
    let root = repo();
    let text = std::fs::read_to_string(doc).expect("read");
    let dir = doc.parent().expect("dir");
    let name = doc.strip_prefix(&root).unwrap_or(doc).display().to_string();
    let mut bad = Vec::new();
    for (n, line) in prose(&text) {
        let (outside, code) = split_code(line);
        for t in link_targets(&outside) {
            if t.contains("://") || t.starts_with("mailto:") || t.starts_with("//") {
                bad.push(format!(
                    "{name}:{n}: link leaves the repository: {t} (name the spec instead)"
                ));
                continue;
            }
            let (file, anchor) = match t.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (t.as_str(), None),
            };
            let target = if file.is_empty() {
                doc.to_path_buf()
            } else {
                dir.join(file)
            };
            let Ok(target) = target.canonicalize() else {
                bad.push(format!("{name}:{n}: dangling link: {t}"));
                continue;
            };
            if !target.starts_with(&root) {
                bad.push(format!("{name}:{n}: link leaves the repository: {t}"));
                continue;
            }
            if let Some(a) = anchor {
                let body = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&body).contains(a) {
                    bad.push(format!("{name}:{n}: no heading for #{a} in {file}"));
                }
            }
        }
        // Bare web addresses in prose; the product's own loopback URLs are fine.
        for w in outside.split_whitespace().filter(|w| !w.contains("](")) {
            if (w.contains("http://") || w.contains("https://"))
                && !w.contains("127.0.0.1")
                && !w.contains("localhost")
                && !w.contains("http://…")
                && !w.contains("http://ADDR")
            {
                bad.push(format!(
                    "{name}:{n}: web address outside the repository: {w}"
                ));
            }
        }
        // Repository paths named in code must exist; none may point outside.
        for c in code {
            let c = c.trim();
            if c.contains("../") {
                bad.push(format!("{name}:{n}: path outside the repository: {c}"));
            }
            let is_path = ["crates/", "tests/", "scripts/", "docs/", "fuzz/"]
                .iter()
                .any(|p| c.starts_with(p))
                && !c.contains(char::is_whitespace)
                && !c.contains(['*', '{', '…']);
            if is_path && !root.join(c.trim_end_matches('/')).exists() {
                bad.push(format!("{name}:{n}: no such file in the repository: {c}"));
            }
        }
    }
    bad
}

/// Development-process labels: "issue 4", "session 8", "the issue …".
fn label_problems(doc: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(doc).expect("read");
    let name = doc.file_name().unwrap_or_default().to_string_lossy();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.to_lowercase();
        let words: Vec<&str> = l
            .split(|c: char| !(c.is_alphanumeric() || c == '#'))
            .filter(|w| !w.is_empty())
            .collect();
        for w in words.windows(2) {
            let numbered = w[1]
                .trim_start_matches('#')
                .starts_with(|c: char| c.is_ascii_digit());
            if (matches!(w[0], "issue" | "issues" | "session" | "sessions") && numbered)
                || (w[0] == "the" && w[1] == "issue")
                || (w[0] == "this" && w[1] == "session")
            {
                bad.push(format!("{name}:{}: internal label: {}", n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn every_relative_link_resolves_and_none_leaves_the_repository() {
    let bad: Vec<String> = documents().iter().flat_map(|d| link_problems(d)).collect();
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn docs_carry_no_internal_labels() {
    let bad: Vec<String> = documents().iter().flat_map(|d| label_problems(d)).collect();
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

/// A line of demo output with what changes from run to run (addresses,
/// MACs, ports, counts, times, column padding) blanked out.
fn shape(line: &str) -> String {
    let mut out = String::new();
    let mut last = ' ';
    for c in line.replace("<1", "0").chars() {
        let c = if c.is_ascii_digit() { '#' } else { c };
        // Runs of digits, and of spaces, are one token.
        if !((c == '#' || c == ' ') && c == last) {
            out.push(c);
        }
        last = c;
    }
    // MAC octets are hex: a:b:c:d:e:f with any letters a-f.
    out.split(' ')
        .map(|w| {
            if w.len() >= 11 && w.split(':').count() == 6 {
                "MAC"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The README's sample of `switchyard demo` is what this build prints, line
/// for line in order (the sample may leave lines out, as it says it does).
#[test]
fn the_readme_demo_sample_is_what_demo_prints() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let start = readme
        .find("```\nswitchyard demo: ")
        .expect("README has a demo sample");
    let sample: Vec<String> = readme[start + 4..]
        .lines()
        .take_while(|l| !l.starts_with("```"))
        // The sample's loopback port is written PORT.
        .map(|l| shape(&l.replace("PORT", "0")))
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .output()
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let printed: Vec<String> = text.lines().map(shape).collect();
    let mut at = 0;
    for want in &sample {
        match printed[at..].iter().position(|l| l == want) {
            Some(i) => at += i + 1,
            None => panic!("README line not printed (in order): {want}\n\nprinted:\n{text}"),
        }
    }
}

/// The checks themselves catch what they are for.
#[test]
fn the_checks_catch_dangling_links_outside_links_and_labels() {
    let dir = scratch_dir();
    let doc = dir.join("check.md");
    std::fs::write(
        &doc,
        "# A heading\n\n[ok](#a-heading) [gone](nowhere.md) [web](https://example.org/x)\n\
         [bad anchor](#no-such-heading) see `crates/nothing/here.rs`\n\
         Target (issue 6): fixed in session 8.\n\
         ```\n[in code](nowhere.md) issue 7\n```\n",
    )
    .expect("write");
    let links = link_problems(&doc);
    assert_eq!(links.len(), 4, "{links:#?}");
    assert!(
        links
            .iter()
            .any(|l| l.contains("dangling link: nowhere.md"))
    );
    assert!(links.iter().any(|l| l.contains("leaves the repository")));
    assert!(links.iter().any(|l| l.contains("#no-such-heading")));
    assert!(links.iter().any(|l| l.contains("crates/nothing/here.rs")));
    let labels = label_problems(&doc);
    // "issue 6" and "session 8" on one line, "issue 7" in the code block.
    assert_eq!(labels.len(), 3, "{labels:#?}");
    assert_eq!(
        anchors("# Live migration (`switchyard bench migration`)\n## L3: routers\n## L3: routers"),
        HashSet::from([
            "live-migration-switchyard-bench-migration".to_string(),
            "l3-routers".to_string(),
            "l3-routers-1".to_string(),
        ])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory inside the repository's target dir (so relative
/// paths in the fixture resolve under the repository root).
fn scratch_dir() -> PathBuf {
    let d = repo()
        .join("target")
        .join(format!("docs-check-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
