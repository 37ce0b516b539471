//! The compute API over a running lab, through the public APIs only: the
//! reference scenario of DESIGN.md (`switchyard demo`'s code), live migration
//! in every supported direction, rollback, concurrent requests, a VM with
//! two ports, and Nova's errors.

use switchyard_lab::client::{LabClient, demo};
use switchyard_lab::live::{LiveLab, Options};

async fn lab() -> (LiveLab, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let live =
        LiveLab::start(Options::reference(dir.path().join("switchyard.db")).expect("reference"))
            .await
            .expect("lab");
    (live, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_scenario_through_the_public_apis() {
    let (live, _dir) = lab().await;
    let c = LabClient::new(&live.url());
    let report = demo::run(&c, &|l| eprintln!("{l}"), Some(demo::MAX_LOST_PINGS))
        .await
        .expect("demo");
    let vif = |n: &str| {
        report
            .vms
            .iter()
            .find(|v| v.name == n)
            .map(|v| (v.host.as_str(), v.vif_type.as_str()))
    };
    assert_eq!(vif("vm-ovs"), Some(("compute-1", "ovs")));
    assert_eq!(vif("vm-vrouter"), Some(("compute-2", "vrouter")));
    assert_eq!(vif("vm-sriov"), Some(("compute-3", "hw_veb")));
    // Every VM to every other and to the internet: 3 × 3 before, 4 × 4 after.
    assert_eq!(
        report.matrix_before.pairs.len(),
        9,
        "{:?}",
        report.matrix_before
    );
    assert_eq!(
        report.matrix_after.pairs.len(),
        16,
        "{:?}",
        report.matrix_after
    );
    assert!(report.matrix_before.ok && report.matrix_after.ok);
    assert_eq!(
        report
            .matrix_before
            .pairs
            .iter()
            .filter(|p| p.to == "internet")
            .count(),
        3
    );
    assert_eq!(
        report
            .matrix_after
            .pairs
            .iter()
            .filter(|p| p.to == "internet")
            .count(),
        4
    );
    let m = &report.migration;
    assert_eq!(
        (m.from_host.as_str(), m.to_host.as_str()),
        ("compute-1", "compute-4")
    );
    assert_eq!(
        (m.vif_type_before.as_str(), m.vif_type_after.as_str()),
        ("ovs", "vrouter")
    );
    assert_eq!(m.ip_before, m.ip_after);
    assert_eq!(m.mac_before, m.mac_after);
    assert!(m.ip_before.starts_with("50.50.50."), "{}", m.ip_before);
    assert!(m.sent > 100, "{m:?}");
    assert!(m.lost_pings <= demo::MAX_LOST_PINGS, "{m:?}");
    let failed: Vec<_> = report.facts.iter().filter(|f| !f.ok).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(report.ok);
    live.shutdown().await;
}
