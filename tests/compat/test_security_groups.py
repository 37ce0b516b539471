"""Security groups through the real clients: openstacksdk's network proxy
against `switchyard server`, and the `openstack` CLI (python-openstackclient)
against `switchyard lab up --auth embedded` with the commands an operator
types: `security group create/list/show/delete`, `security group rule
create/list/delete`, `port create --security-group` / `--no-security-group`
and `port set --disable-port-security`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import openstack.exceptions as exc
import pytest

from conftest import auth_lab

OPENSTACK = str(Path(sys.executable).parent / "openstack")


# --------------------------------------------------------------------------- openstacksdk


def test_sdk_groups_rules_and_ports(conn, net_factory, uniq):
    net = net_factory()
    conn.network.create_subnet(network_id=net.id, cidr="10.77.0.0/24", ip_version=4)
    default = next(conn.network.security_groups(name="default", project_id=net.project_id))
    assert len(default.security_group_rules) == 4
    assert default.description == "Default security group"

    sg = conn.network.create_security_group(name=f"web-{uniq}", description="web tier")
    try:
        assert {r["direction"] for r in sg.security_group_rules} == {"egress"}
        ssh = conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="tcp",
            port_range_min=22, port_range_max=22, remote_ip_prefix="203.0.113.0/24")
        assert (ssh.protocol, ssh.port_range_min, ssh.ether_type) == ("tcp", 22, "IPv4")
        assert ssh.remote_ip_prefix == "203.0.113.0/24"
        peers = conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", remote_group_id=sg.id)
        assert peers.remote_group_id == sg.id
        with pytest.raises(exc.ConflictException, match="already exists"):
            conn.network.create_security_group_rule(
                security_group_id=sg.id, direction="ingress", protocol="6",
                port_range_min=22, port_range_max=22, remote_ip_prefix="203.0.113.0/24")
        with pytest.raises(exc.BadRequestException, match="not supported"):
            conn.network.create_security_group_rule(
                security_group_id=sg.id, direction="ingress", protocol="nope")
        listed = {r.id for r in conn.network.security_group_rules(security_group_id=sg.id)}
        assert {ssh.id, peers.id} <= listed and len(listed) == 4
        got = conn.network.get_security_group(sg.id)
        assert got.name == f"web-{uniq}" and len(got.security_group_rules) == 4
        conn.network.update_security_group(sg, description="web and ssh")
        assert conn.network.get_security_group(sg.id).description == "web and ssh"

        # Ports: the default group unless told otherwise.
        p_default = conn.network.create_port(network_id=net.id)
        assert p_default.security_group_ids == [default.id]
        assert p_default.is_port_security_enabled is True
        p_web = conn.network.create_port(network_id=net.id, security_group_ids=[sg.id])
        assert p_web.security_group_ids == [sg.id]
        p_none = conn.network.create_port(network_id=net.id, security_group_ids=[])
        assert p_none.security_group_ids == []
        assert [p.id for p in conn.network.ports(security_groups=[sg.id])] == [p_web.id]
        with pytest.raises(exc.ConflictException, match="in use"):
            conn.network.delete_security_group(sg)
        with pytest.raises(exc.ConflictException, match="security group associated"):
            conn.network.update_port(p_web, port_security_enabled=False)
        off = conn.network.update_port(p_web, port_security_enabled=False, security_group_ids=[])
        assert off.is_port_security_enabled is False and off.security_group_ids == []

        conn.network.delete_security_group_rule(ssh)
        with pytest.raises(exc.NotFoundException):
            conn.network.get_security_group_rule(ssh.id)
        with pytest.raises(exc.ConflictException, match="Default security group"):
            conn.network.create_security_group(name="default")
    finally:
        for p in list(conn.network.ports(network_id=net.id)):
            conn.network.delete_port(p, ignore_missing=True)
        conn.network.delete_security_group(sg, ignore_missing=True)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_security_group(sg.id)


# --------------------------------------------------------------------------- openstack CLI


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    path = tmp_path_factory.mktemp("sg-cli") / "clouds.yaml"
    with auth_lab(path, "switchyard-sg-cli-"):
        yield path


def run(clouds, *args, fmt=True, ok=True, cloud="switchyard-demo"):
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds))
    cmd = [OPENSTACK, "--os-cloud", cloud, *args] + (["-f", "json"] if fmt else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if not ok:
        assert out.returncode != 0, f"{' '.join(args)} succeeded: {out.stdout}"
        return out.stderr
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"
    return json.loads(out.stdout) if fmt and out.stdout.strip() else out.stdout


def test_cli_security_group_commands(clouds):
    os_ = lambda *a, **k: run(clouds, *a, **k)
    os_("network", "create", "sg-net")
    os_("subnet", "create", "--network", "sg-net", "--subnet-range", "10.88.0.0/24", "sg-sub")

    made = os_("security", "group", "create", "--description", "ssh in", "ssh-in")
    assert made["name"] == "ssh-in" and made["description"] == "ssh in"
    names = {g["Name"] for g in os_("security", "group", "list")}
    assert {"default", "ssh-in"} <= names
    shown = os_("security", "group", "show", "ssh-in")
    assert shown["id"] == made["id"]

    rule = os_("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22",
               "--remote-ip", "198.51.100.0/24", "--ingress", "ssh-in")
    assert rule["port_range_min"] == 22 and rule["port_range_max"] == 22
    assert rule["remote_ip_prefix"] == "198.51.100.0/24" and rule["protocol"] == "tcp"
    icmp = os_("security", "group", "rule", "create", "--protocol", "icmp", "ssh-in")
    rules = os_("security", "group", "rule", "list", "ssh-in")
    assert {r["ID"] for r in rules} >= {rule["id"], icmp["id"]} and len(rules) == 4
    err = os_("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22",
              "--remote-ip", "198.51.100.0/24", "--ingress", "ssh-in", fmt=False, ok=False)
    assert "already exists" in err
    os_("security", "group", "rule", "delete", icmp["id"], fmt=False)
    assert len(os_("security", "group", "rule", "list", "ssh-in")) == 3

    with_group = os_("port", "create", "--network", "sg-net", "--security-group", "ssh-in", "p1")
    assert with_group["security_group_ids"] == [made["id"]]
    without = os_("port", "create", "--network", "sg-net", "--no-security-group", "p2")
    assert without["security_group_ids"] == []
    default = os_("port", "create", "--network", "sg-net", "p3")
    default_id = os_("security", "group", "show", "default")["id"]
    assert default["security_group_ids"] == [default_id]

    # Port security off: refused while the port is in a group, as Neutron does.
    err = os_("port", "set", "--disable-port-security", "p1", fmt=False, ok=False)
    assert "security group" in err
    os_("port", "set", "--disable-port-security", "p2", fmt=False)
    assert os_("port", "show", "p2")["port_security_enabled"] is False
    os_("port", "set", "--no-security-group", "--disable-port-security", "p1", fmt=False)
    p1 = os_("port", "show", "p1")
    assert p1["port_security_enabled"] is False and p1["security_group_ids"] == []

    # Nova's --security-group: the ports it makes for the server get it.
    vm = os_("server", "create", "--flavor", "m1.tiny", "--image", "switchyard-guest",
             "--network", "sg-net", "--security-group", "ssh-in",
             "--availability-zone", "nova:compute-2", "--wait", "sg-vm")
    assert vm["status"] == "ACTIVE", vm
    vm_port = os_("port", "list", "--server", vm["id"])[0]["ID"]
    assert os_("port", "show", vm_port)["security_group_ids"] == [made["id"]]
    # The server lists its ports' groups by name, asked of the networking API
    # each time, as Nova does: a group added to the port shows up.
    assert "ssh-in" in str(os_("server", "show", "sg-vm")["security_groups"])
    os_("port", "set", "--security-group", "default", vm_port, fmt=False)
    shown = str(os_("server", "show", "sg-vm")["security_groups"])
    assert "ssh-in" in shown and "default" in shown, shown
    err = os_("server", "create", "--flavor", "m1.tiny", "--image", "switchyard-guest",
              "--network", "sg-net", "--security-group", "no-such-group", "sg-vm2",
              fmt=False, ok=False)
    assert "no-such-group" in err and "found" in err, err
    os_("server", "delete", "--wait", "sg-vm", fmt=False)

    err = os_("security", "group", "delete", "default", fmt=False, ok=False)
    assert "in use" in err or "Insufficient rights" in err
    os_("security", "group", "delete", "ssh-in", fmt=False)
    assert "ssh-in" not in {g["Name"] for g in os_("security", "group", "list")}
    for p in ("p1", "p2", "p3"):
        os_("port", "delete", p, fmt=False)


def test_cli_quota_set_for_security_groups(clouds):
    """`openstack quota set` sends `check_limit` (OSC 10): limits below what
    a project uses are refused with Neutron's message, others are set."""
    admin = lambda *a, **k: run(clouds, *a, cloud="switchyard", **k)
    demo = run(clouds, "token", "issue")["project_id"]
    run(clouds, "security", "group", "list")  # makes the project's default group
    admin("quota", "set", "--secgroups", "20", "--secgroup-rules", "200", demo, fmt=False)
    shown = admin("quota", "show", demo)
    limits = {r["Resource"]: r["Limit"] for r in shown} if isinstance(shown, list) else shown
    assert limits.get("secgroups", limits.get("security_groups")) == 20, shown
    assert limits.get("secgroup-rules", limits.get("security_group_rules")) == 200, shown
    err = admin("quota", "set", "--secgroups", "0", demo, fmt=False, ok=False)
    assert "usage less than 0" in err, err
