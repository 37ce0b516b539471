"""The `openstack` CLI (python-openstackclient from PyPI), unchanged, against
`switchyard lab up --auth embedded`: the seed's demo as an operator types
it — token, network, subnet, router with an extra route, servers with a
flavor and the guest image on an OVS, a vRouter and an SR-IOV host (a
`direct` port), server list/show, a live migration OVS → vRouter by the
admin with `--wait`, the port's new `binding_vif_type`, hypervisors,
availability zones and quotas."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import auth_lab

OPENSTACK = str(Path(sys.executable).parent / "openstack")


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clouds.yaml"
    with auth_lab(path, "switchyard-cli-"):
        yield path


def cli(clouds, cloud, *args, fmt=True):
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds))
    cmd = [OPENSTACK, "--os-cloud", cloud, *args] + (["-f", "json"] if fmt else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"
    return json.loads(out.stdout) if fmt and out.stdout.strip() else out.stdout


def test_the_seed_demo_through_the_openstack_cli(clouds):
    demo = lambda *a, **k: cli(clouds, "switchyard-demo", *a, **k)
    admin = lambda *a, **k: cli(clouds, "switchyard", *a, **k)
    token = demo("token", "issue")
    assert token["project_id"] and token["expires"]

    demo("network", "create", "demo-net")
    demo("subnet", "create", "--network", "demo-net", "--subnet-range", "50.50.50.0/24", "demo-sub")
    demo("router", "create", "demo-router")
    demo("router", "add", "subnet", "demo-router", "demo-sub", fmt=False)
    demo("router", "add", "route", "--route", "destination=172.16.0.0/16,gateway=50.50.50.5",
         "demo-router", fmt=False)
    assert demo("router", "show", "demo-router")["routes"] == [
        {"destination": "172.16.0.0/16", "nexthop": "50.50.50.5"}]

    vf = demo("port", "create", "--network", "demo-net", "--vnic-type", "direct", "vm-sriov-port")
    ids = {}
    for name, host, net in [
        ("vm-ovs", "compute-1", ["--network", "demo-net"]),
        ("vm-vrouter", "compute-2", ["--network", "demo-net"]),
        ("vm-sriov", "compute-3", ["--port", vf["id"]]),
    ]:
        s = demo("server", "create", "--flavor", "m1.tiny", "--image", "switchyard-guest", *net,
                 "--availability-zone", f"nova:{host}", "--wait", name)
        assert s["status"] == "ACTIVE", s
        ids[name] = s["id"]
    listed = {s["Name"]: s for s in demo("server", "list")}
    assert sorted(listed) == ["vm-ovs", "vm-sriov", "vm-vrouter"]
    assert all(s["Status"] == "ACTIVE" and s["Flavor"] == "m1.tiny" for s in listed.values())
    shown = demo("server", "show", "vm-ovs")
    assert shown["image"].startswith("switchyard-guest")

    # The admin live-migrates the OVS VM to the second vRouter node.
    port = admin("port", "list", "--server", ids["vm-ovs"])[0]["ID"]
    assert admin("port", "show", port)["binding_vif_type"] == "ovs"
    admin("server", "migrate", "--live-migration", "--host", "compute-4", "--wait",
          ids["vm-ovs"], fmt=False)
    after = admin("server", "show", ids["vm-ovs"])
    assert after["OS-EXT-SRV-ATTR:host"] == "compute-4" and after["status"] == "ACTIVE"
    assert admin("port", "show", port)["binding_vif_type"] == "vrouter"
    events = admin("server", "event", "list", ids["vm-ovs"])
    assert [e["Action"] for e in events] == ["live-migration", "create"], events

    hyps = {h["Hypervisor Hostname"] for h in admin("hypervisor", "list")}
    matching = admin("hypervisor", "list", "--matching", "compute-4")
    assert [h["Hypervisor Hostname"] for h in matching] == ["compute-4"], matching
    assert hyps == {"compute-1", "compute-2", "compute-3", "compute-4"}
    assert admin("hypervisor", "show", "compute-4")["hypervisor_type"] == "switchyard-lab"
    assert [z["Zone Name"] for z in demo("availability", "zone", "list")] == ["nova"]
    q = demo("quota", "show")
    limits = q if isinstance(q, dict) else {r["Resource"]: r["Limit"] for r in q}
    assert limits["ports"] == 500 and limits["instances"] == 10, limits
