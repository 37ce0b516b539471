//! A real QEMU VM of the guest image, on a TAP bridged in a network
//! namespace with a DHCP server: it boots, answers on its serial console,
//! takes its lease, answers ping, serves a 16 MiB file over TCP that
//! arrives intact, and live-migrates into a second QEMU on another TAP while
//! pinged every 10 ms, keeping its address and its console. Needs root and
//! QEMU (`scripts/test.sh` installs it).

#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_lab::linux::image::{self, Inputs};
use switchyard_lab::linux::vm::{self, Vm, VmSpec};

/// The namespace and everything in it go when the test ends, however it ends.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ip"])
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh(ns: &str, script: &str) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_vm_boots_serves_and_live_migrates() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: QEMU VMs on TAP devices need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = Instant::now();
    let img = image::ensure(&dir.path().join("cache"), &Inputs::default()).expect("image");
    eprintln!("image {} built in {:?}", img.release, t0.elapsed());
    // Built once, reused while its inputs are unchanged.
    let again = image::ensure(&dir.path().join("cache"), &Inputs::default()).expect("image");
    assert_eq!(again.kernel, img.kernel);

    let name = format!("syq{}", std::process::id() % 100_000);
    let ns = Ns(name.clone());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .expect("ip")
            .success()
    );
    ip(&ns.0, &["link", "set", "lo", "up"]);
    ip(&ns.0, &["link", "add", "br0", "type", "bridge"]);
    ip(&ns.0, &["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    ip(&ns.0, &["link", "set", "br0", "up"]);
    for tap in ["tq0", "tq1"] {
        ip(
            &ns.0,
            &["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"],
        );
        ip(&ns.0, &["link", "set", tap, "master", "br0", "up"]);
    }
    let conf = dir.path().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.77.0.100\nend 10.77.0.150\ninterface br0\nlease_file {}\noption subnet 255.255.255.0\noption router 10.77.0.1\noption lease 3600\n",
            dir.path().join("leases").display()
        ),
    )
    .expect("conf");
    std::fs::write(dir.path().join("leases"), "").expect("leases");
    let (ok, out) = sh(&ns.0, &format!("busybox udhcpd -S {}", conf.display()));
    assert!(ok, "udhcpd: {out}");

    let spec = |tap: &str, run: &str, incoming: bool| VmSpec {
        name: "vm-q".into(),
        mac: "fa:16:3e:00:77:01".into(),
        tap: tap.into(),
        netns: Some(name.clone()),
        memory_mb: 128,
        run_dir: dir.path().join(run),
        incoming,
    };
    let t0 = Instant::now();
    let mut a = Vm::spawn(&img, spec("tq0", "a", false)).expect("spawn");
    let mut con = a.console(Duration::from_secs(90)).await.expect("console");
    eprintln!("console ready {:?} after launch", t0.elapsed());
    // The kernel is the image's, and the control channel reports exit codes.
    let uname = con
        .exec("uname -r", Duration::from_secs(10))
        .await
        .expect("uname");
    assert_eq!(uname.text.trim(), img.release);
    assert_eq!(
        con.exec("exit 3", Duration::from_secs(10))
            .await
            .expect("exit")
            .status,
        3
    );

    // The lease, from the DHCP server next to it.
    let lease = con
        .until_ok("cat /run/lease", Duration::from_secs(60))
        .await
        .expect("console")
        .text
        .trim()
        .to_string();
    assert!(
        lease.starts_with("10.77.0.1"),
        "no lease: {lease:?}\n{}",
        a.log()
    );
    eprintln!("lease {lease} {:?} after launch", t0.elapsed());
    let (ok, out) = sh(&ns.0, &format!("ping -c 3 -i 0.2 -W 2 {lease}"));
    assert!(ok, "ping {lease}: {out}");

    // TCP: 16 MiB from the VM's HTTP server, byte for byte.
    let want = con
        .until_ok(
            "[ -f /www/blob ] && sha256sum /www/blob",
            Duration::from_secs(60),
        )
        .await
        .expect("console")
        .text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(want.len(), 64, "no blob in the VM");
    let t1 = Instant::now();
    let (ok, got) = sh(
        &ns.0,
        &format!("busybox wget -q -O - http://{lease}/blob | sha256sum"),
    );
    eprintln!("16 MiB over HTTP in {:?}", t1.elapsed());
    assert!(
        ok && got.starts_with(&want),
        "fetched {got}, the VM has {want}"
    );

    // Live migration into a second QEMU on the other TAP, pinged every 10 ms.
    let mut b = Vm::spawn(&img, spec("tq1", "b", true)).expect("spawn dest");
    let mut qa = a.qmp().await.expect("qmp a");
    let mut qb = b.qmp().await.expect("qmp b");
    let st = qb
        .execute("query-status", None, Duration::from_secs(5))
        .await
        .expect("status");
    assert_eq!(st["status"], "inmigrate");
    let pinger = Command::new("ip")
        .args([
            "netns", "exec", &ns.0, "ping", "-i", "0.01", "-w", "4", &lease,
        ])
        .output();
    let pinger = tokio::task::spawn_blocking(move || pinger);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = vm::migrate(&mut qa, &mut qb, &b.spec, 50, Duration::from_secs(60))
        .await
        .expect("migrate");
    eprintln!("migration: {stats:?}");
    assert!(stats.total_ms > 0);
    let st = qb
        .execute("query-status", None, Duration::from_secs(5))
        .await
        .expect("status");
    assert_eq!(st["status"], "running", "{st}");
    let st = qa
        .execute("query-status", None, Duration::from_secs(5))
        .await
        .expect("status");
    assert_eq!(st["status"], "postmigrate", "{st}");
    let out = pinger.await.expect("join").expect("ping");
    let (sent, received) =
        switchyard_lab::linux::guests::ping_counts(&String::from_utf8_lossy(&out.stdout));
    eprintln!("pings across the migration: {received} of {sent} answered");
    assert!(
        sent > 100 && received > 0,
        "{sent} sent, {received} answered"
    );
    // The same VM on the destination: its console, its address, its uptime.
    a.kill();
    let mut con_b = b.console(Duration::from_secs(30)).await.expect("console b");
    let l = con_b
        .exec("cat /run/lease", Duration::from_secs(10))
        .await
        .expect("lease");
    assert_eq!(l.text.trim(), lease);
    let (ok, out) = sh(&ns.0, &format!("ping -c 3 -i 0.2 -W 2 {lease}"));
    assert!(ok, "ping after migration: {out}");
    b.kill();
    drop(ns);
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&name));
}
