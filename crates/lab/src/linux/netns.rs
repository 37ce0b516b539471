//! Host plumbing for Linux mode: network namespaces, veth pairs, Linux
//! bridges and TAPs, made with iproute2's `ip` (what an operator would type,
//! and what the lab's state file lets `lab down` undo), and listeners opened
//! inside a namespace.

use std::net::SocketAddr;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{0}` failed: {1}")]
    Command(String, String),
    #[error("`{0}` could not run: {1} (is iproute2 installed? apt-get install iproute2)")]
    Spawn(String, std::io::Error),
    #[error("entering namespace {0}: {1}")]
    Enter(String, String),
}

/// Runs `prog args`, failing with its stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String, NetnsError> {
    let shown = format!("{prog} {}", args.join(" "));
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| NetnsError::Spawn(shown.clone(), e))?;
    if !out.status.success() {
        return Err(NetnsError::Command(
            shown,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run("ip", args)
}

/// `ip netns exec NS ip ARGS`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String, NetnsError> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

/// Runs `cmd` inside `ns`: whether it succeeded, and what it printed.
pub fn exec(ns: &str, cmd: &[&str]) -> Result<(bool, String), NetnsError> {
    let shown = format!("ip netns exec {ns} {}", cmd.join(" "));
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .map_err(|e| NetnsError::Spawn(shown, e))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// A new namespace with its loopback up.
pub fn add(ns: &str) -> Result<(), NetnsError> {
    ip(&["netns", "add", ns])?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes a namespace (and with it every device in it); absent is fine.
pub fn del(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

/// The namespaces that exist now.
pub fn list() -> Vec<String> {
    ip(&["netns", "list"])
        .map(|o| {
            o.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A veth pair: `a_dev` in `a_ns` and `b_dev` in `b_ns`, each addressed when
/// given, both up.
pub fn wire(
    (a_ns, a_dev, a_addr): (&str, &str, Option<&str>),
    (b_ns, b_dev, b_addr): (&str, &str, Option<&str>),
) -> Result<(), NetnsError> {
    ip(&[
        "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev, "netns", b_ns,
    ])?;
    for (ns, dev, addr) in [(a_ns, a_dev, a_addr), (b_ns, b_dev, b_addr)] {
        if let Some(addr) = addr {
            ip_in(ns, &["addr", "add", addr, "dev", dev])?;
        }
        ip_in(ns, &["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A Linux bridge `br` in `ns`, up (a learning bridge: 802.1Q tags pass).
pub fn bridge(ns: &str, br: &str) -> Result<(), NetnsError> {
    ip_in(ns, &["link", "add", br, "type", "bridge"])?;
    ip_in(ns, &["link", "set", br, "up"])?;
    Ok(())
}

/// Puts `dev` of `ns` on bridge `br`.
pub fn enslave(ns: &str, dev: &str, br: &str) -> Result<(), NetnsError> {
    ip_in(ns, &["link", "set", dev, "master", br])?;
    Ok(())
}

/// A persistent TAP `name` in `ns`, up, on bridge `br` if given.
pub fn tap(ns: &str, name: &str, br: Option<&str>) -> Result<(), NetnsError> {
    ip_in(ns, &["tuntap", "add", "dev", name, "mode", "tap"])?;
    if let Some(br) = br {
        enslave(ns, name, br)?;
    }
    ip_in(ns, &["link", "set", name, "up"])?;
    Ok(())
}

/// A TCP listener opened inside namespace `ns` (a thread enters it, binds,
/// and the socket stays in it), non-blocking for tokio.
pub fn listen_in(ns: &str, addr: SocketAddr) -> Result<std::net::TcpListener, NetnsError> {
    let path = format!("/run/netns/{ns}");
    let ns2 = ns.to_string();
    std::thread::spawn(move || -> Result<std::net::TcpListener, NetnsError> {
        let enter = |e: String| NetnsError::Enter(ns2.clone(), e);
        let f = std::fs::File::open(&path).map_err(|e| enter(e.to_string()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| enter(e.to_string()))?;
        let l = std::net::TcpListener::bind(addr).map_err(|e| enter(e.to_string()))?;
        l.set_nonblocking(true).map_err(|e| enter(e.to_string()))?;
        Ok(l)
    })
    .join()
    .map_err(|_| NetnsError::Enter(ns.to_string(), "the thread panicked".into()))?
}
