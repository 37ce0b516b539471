//! Real QEMU VMs behind the compute API of a Linux-mode lab (root; QEMU from
//! `scripts/test.sh`): servers booted on an OVS, a vRouter and an SR-IOV
//! node, each NIC plugged as its binding's `vif_type` says; a 16 MiB body
//! over TCP from a VM's HTTP server across OVS ↔ vRouter before and after
//! each live migration; QEMU's live migration in three directions (OVS →
//! vRouter, vRouter → OVS, vRouter → vRouter) under a 10 ms `ping` inside
//! another VM, IP and MAC kept, `vif_type` following the host; a `direct`
//! port refused to a vRouter host; a destination whose agent is frozen
//! never pre-plugs and the migration rolls back with the VM running on its
//! source and no ping lost; nothing of the VMs left after the lab stops.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_lab::client::{LabClient, demo, migration};
use switchyard_lab::linux::{LinuxLab, Options, guests::GuestKind};

/// One shell command line in a guest, through the lab API (the VM's serial
/// console): (exit status, output).
async fn exec(c: &LabClient, guest: &str, cmd: &str, secs: u64) -> (i64, String) {
    let r = c
        .post(
            &format!("/switchyard/v1/lab/guests/{guest}/exec"),
            &json!({"exec": {"command": cmd, "timeout_s": secs}}),
        )
        .await
        .expect("exec");
    (
        r["exec"]["status"].as_i64().unwrap_or(-1),
        r["exec"]["output"].as_str().unwrap_or_default().to_string(),
    )
}

/// The SHA-256 of the 16 MiB blob VM `guest` serves (written at boot).
async fn blob_sum(c: &LabClient, guest: &str) -> String {
    for _ in 0..120 {
        let (rc, out) = exec(c, guest, "[ -f /www/blob ] && sha256sum /www/blob", 30).await;
        if rc == 0 {
            return out
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{guest} never wrote its blob");
}

/// `from` fetches `to`'s blob over HTTP; it must arrive byte for byte.
async fn fetch_intact(c: &LabClient, from: &str, to: &str, to_ip: &str, want: &str) {
    let (rc, out) = exec(
        c,
        from,
        &format!("wget -q -O - http://{to_ip}/blob | sha256sum"),
        180,
    )
    .await;
    assert!(
        rc == 0 && out.starts_with(want),
        "{from} fetched {to}'s 16 MiB: rc {rc}, {out} (want {want})"
    );
}

async fn server(c: &LabClient, id: &str) -> Value {
    c.get(&format!("/compute/v2.1/servers/{id}"))
        .await
        .expect("server")["server"]
        .clone()
}

fn id(s: &Value) -> String {
    s["id"].as_str().expect("id").to_string()
}

/// A live migration under a stream that must complete cleanly.
async fn migrate(c: &LabClient, id: &str, peer: &str, to: &str) -> migration::MigrationResult {
    let m = migration::migrate_under_stream(c, id, peer, to, 10)
        .await
        .expect("migration");
    assert!(m.ok() && m.to_host == to, "{m:?}");
    assert_eq!(m.migration_status, "completed", "{m:?}");
    assert_eq!(
        (m.port_status_after.as_str(), m.port_host_after.as_str()),
        ("ACTIVE", to)
    );
    // QEMU moved the VM (its own report of the pause), and the stream came back.
    assert!(
        m.qemu_downtime_ms.is_some() && m.qemu_total_ms.is_some(),
        "{m:?}"
    );
    assert!(m.lost_pings < m.sent / 2, "{m:?}");
    eprintln!(
        "{} {} -> {}: lost {} of {}, outage {} ms, QEMU downtime {:?} ms of {:?} ms, migration {} ms",
        m.vm,
        m.from_host,
        m.to_host,
        m.lost_pings,
        m.sent,
        m.outage_ms,
        m.qemu_downtime_ms,
        m.qemu_total_ms,
        m.migration_ms
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_vms_boot_serve_tcp_and_live_migrate_across_backends() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: QEMU VMs in a Linux lab need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("syq{}", std::process::id() % 100_000);
    let lab = LinuxLab::start(Options {
        topology: switchyard_lab::Topology::reference().expect("topology"),
        bind: "127.0.0.1:0".into(),
        db: dir.path().join("switchyard.db"),
        ml2: switchyard_ml2::Ml2Config::default(),
        project: "admin".into(),
        binary: env!("CARGO_BIN_EXE_switchyard").into(),
        state_dir: dir.path().join("state"),
        prefix: prefix.clone(),
        http: switchyard_api::HttpOptions::default(),
        guests: GuestKind::Qemu,
        identity: None,
    })
    .await
    .expect("lab");
    let c = LabClient::new(&lab.url());
    let hyp = c
        .get("/compute/v2.1/os-hypervisors/detail")
        .await
        .expect("hypervisors");
    assert_eq!(hyp["hypervisors"][0]["hypervisor_type"], "QEMU", "{hyp}");
    let net = demo::network(&c).await.expect("network");
    let limit = Duration::from_secs(120);
    let boot = async |name: &str, host: &str| {
        c.boot(name, json!([{"uuid": net}]), host, limit)
            .await
            .expect("boot")
    };
    let ovs = boot("q-ovs", "compute-1").await;
    let vr = boot("q-vrouter", "compute-2").await;
    let mig = boot("q-migrate", "compute-1").await;
    let (vr_id, mig_id) = (id(&vr), id(&mig));
    assert_eq!(server(&c, &id(&ovs)).await["status"], "ACTIVE");
    let guest = |n: &str| {
        let n = n.to_string();
        let c = &c;
        async move {
            c.get(&format!("/switchyard/v1/lab/guests/{n}"))
                .await
                .expect("guest")["guest"]
                .clone()
        }
    };
    let g = guest("q-migrate").await;
    assert_eq!(g["kind"], "qemu", "{g}");
    assert_eq!(g["vif_type"], "ovs", "{g}");
    let mig_ip = g["ip"].as_str().expect("the VM's lease").to_string();
    let vr_ip = guest("q-vrouter").await["ip"]
        .as_str()
        .expect("ip")
        .to_string();
    // The lease the VM's own DHCP client took is the port's address.
    let addr = server(&c, &mig_id).await["addresses"]["demo-net"][0]["addr"].clone();
    assert_eq!(addr, mig_ip.as_str());
    // The VM's console answers whatever its network does, and its kernel
    // has the port's MAC on eth0.
    let (rc, out) = exec(&c, "q-migrate", "cat /sys/class/net/eth0/address", 10).await;
    assert_eq!(rc, 0);
    assert_eq!(out.trim(), g["mac"].as_str().expect("mac"));
    // What the lab API refuses, in Neutron's shape.
    for (method, path, body, status) in [
        (
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests/q-migrate/exec",
            json!({"exec": {"command": "true\nreboot"}}),
            400,
        ),
        (
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests/q-migrate/exec",
            json!({"exec": {"command": "true", "timeout_s": 100_000}}),
            400,
        ),
        (
            reqwest::Method::POST,
            "/switchyard/v1/lab/guests/nobody/exec",
            json!({"exec": {"command": "true"}}),
            404,
        ),
        (
            reqwest::Method::PATCH,
            "/switchyard/v1/lab/guests/q-migrate",
            json!({}),
            405,
        ),
    ] {
        let (s, v) = c.call(method, path, Some(&body)).await.expect("call");
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["NeutronError"]["message"].is_string(), "{path}: {v}");
    }

    // TCP across OVS -> gateway -> vRouter, before any migration.
    let mig_sum = blob_sum(&c, "q-migrate").await;
    fetch_intact(&c, "q-vrouter", "q-migrate", &mig_ip, &mig_sum).await;

    // OVS -> vRouter, pinged from the vRouter VM; TCP from the OVS VM after.
    let m = migrate(&c, &mig_id, "q-vrouter", "compute-4").await;
    assert_eq!(
        (m.vif_type_before.as_str(), m.vif_type_after.as_str()),
        ("ovs", "vrouter")
    );
    assert_eq!(
        (m.ip_before.as_str(), m.mac_before.as_str()),
        (m.ip_after.as_str(), m.mac_after.as_str())
    );
    let g = guest("q-migrate").await;
    assert_eq!(
        (&g["host"], &g["vif_type"]),
        (&json!("compute-4"), &json!("vrouter"))
    );
    assert_eq!(g["last_migration"]["from"], "compute-1", "{g}");
    fetch_intact(&c, "q-ovs", "q-migrate", &mig_ip, &mig_sum).await;

    // vRouter -> OVS, and TCP again from the vRouter VM.
    let m = migrate(&c, &mig_id, "q-vrouter", "compute-1").await;
    assert_eq!(
        (m.vif_type_before.as_str(), m.vif_type_after.as_str()),
        ("vrouter", "ovs")
    );
    fetch_intact(&c, "q-vrouter", "q-migrate", &mig_ip, &mig_sum).await;

    // vRouter -> vRouter: the vRouter VM moves, pinged from the OVS VM.
    let vr_sum = blob_sum(&c, "q-vrouter").await;
    let m = migrate(&c, &vr_id, "q-ovs", "compute-4").await;
    assert_eq!(
        (m.vif_type_before.as_str(), m.vif_type_after.as_str()),
        ("vrouter", "vrouter")
    );
    fetch_intact(&c, "q-ovs", "q-vrouter", &vr_ip, &vr_sum).await;

    // A VF VM: its direct port cannot bind on a vRouter host; the VM stays.
    let p = c
        .post(
            "/v2.0/ports",
            &json!({"port": {"network_id": net, "binding:vnic_type": "direct"}}),
        )
        .await
        .expect("port");
    let vf_port = p["port"]["id"].as_str().expect("id").to_string();
    let vf = c
        .boot("q-sriov", json!([{"port": vf_port}]), "compute-3", limit)
        .await
        .expect("boot VF VM");
    let vf_ip = guest("q-sriov").await["ip"]
        .as_str()
        .expect("ip")
        .to_string();
    let (s, v) = c
        .call(
            reqwest::Method::POST,
            &format!("/compute/v2.1/servers/{}/action", id(&vf)),
            Some(&json!({"os-migrateLive": {"host": "compute-4", "block_migration": "auto"}})),
        )
        .await
        .expect("call");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["badRequest"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(
                "binding:vnic_type direct cannot be bound on compute-4, whose networking is vrouter"
            )),
        "{v}"
    );
    assert_eq!(
        server(&c, &id(&vf)).await["OS-EXT-SRV-ATTR:host"],
        "compute-3"
    );
    let r = c
        .post(
            "/switchyard/v1/lab/guests/q-ovs/ping",
            &json!({"ping": {"target": vf_ip, "count": 3, "interval_ms": 100}}),
        )
        .await
        .expect("ping");
    assert_eq!(r["ping"]["answered"], 3, "{r}");
    // TCP from the VF VM: to the OVS VM (VLAN to VLAN across the fabric) and
    // to the vRouter VM now on compute-4 (VLAN -> gateway -> VXLAN).
    let vf_sum = blob_sum(&c, "q-sriov").await;
    fetch_intact(&c, "q-ovs", "q-sriov", &vf_ip, &vf_sum).await;
    fetch_intact(&c, "q-vrouter", "q-sriov", &vf_ip, &vf_sum).await;

    // Rollback: compute-2's agent is frozen (dead, but not yet for
    // Neutron): the destination binding is made, the TAP is never reported,
    // pre-live-migration times out, and the VM runs on compute-1 with no
    // request of the stream lost.
    lab.pause_agent("compute-2", true).expect("freeze");
    migration::warm(&c, "q-ovs", &mig_ip).await.expect("warm");
    c.put(
        "/switchyard/v1/lab/guests/q-ovs/stream",
        &json!({"stream": {"target": mig_ip, "interval_ms": 10}}),
    )
    .await
    .expect("stream");
    c.post(
        &format!("/compute/v2.1/servers/{mig_id}/action"),
        &json!({"os-migrateLive": {"host": "compute-2", "block_migration": "auto"}}),
    )
    .await
    .expect("accepted: the binding succeeds");
    let s = c
        .wait_server(&mig_id, Duration::from_secs(90), |s| {
            s["status"] != "MIGRATING"
        })
        .await
        .expect("the migration ends");
    lab.pause_agent("compute-2", false).expect("thaw");
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-1");
    let m = c
        .get(&format!(
            "/compute/v2.1/os-migrations?instance_uuid={mig_id}"
        ))
        .await
        .expect("migrations");
    let m = &m["migrations"][0];
    assert_eq!(m["status"], "error", "{m}");
    assert!(
        m["switchyard:error"].as_str().is_some_and(|e| e
            .contains("pre-live-migration on compute-2")
            && e.contains("compute-1")),
        "{m}"
    );
    let r = c
        .delete("/switchyard/v1/lab/guests/q-ovs/stream")
        .await
        .expect("stop")["stream"]
        .clone();
    let sent = r["sent"].as_u64().unwrap_or(0);
    assert!(sent > 100, "{r}");
    assert_eq!(
        r["lost"],
        json!([]),
        "nothing lost across the rollback: {r}"
    );
    let g = guest("q-migrate").await;
    assert_eq!(
        (&g["host"], &g["vif_type"]),
        (&json!("compute-1"), &json!("ovs"))
    );
    // Nothing of the attempt on compute-2: no TAP for the port there.
    let tap = switchyard_agent::linux::tap_name(g["port_id"].as_str().expect("port"));
    let links = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{prefix}-compute-2"),
            "ip",
            "-o",
            "link",
        ])
        .output()
        .expect("ip");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&tap), "{tap} left on compute-2:\n{links}");
    fetch_intact(&c, "q-vrouter", "q-migrate", &mig_ip, &mig_sum).await;

    lab.shutdown().await;
    // Every QEMU went with the lab.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("{}", dir.path().join("state").display())])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes of the lab left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
