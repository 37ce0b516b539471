"""openstacksdk's compute proxy against the lab's compute API.

A `switchyard lab up` process (controller, agents, emulated fabric and the
compute service) is started for this module; openstacksdk reaches it with
`compute_endpoint_override` ending in `/compute/v2.1/`, runs its version
discovery there and negotiates a microversion, then boots servers, lists
hypervisors, live-migrates a server from the OVS node to a vRouter node and
reads the migration record, as an operator's scripts would.
"""

import time

import openstack.exceptions as exc
import pytest

from conftest import noauth_cloud, noauth_lab



@pytest.fixture(scope="module")
def lab():
    with noauth_lab("switchyard-compute-") as run:
        yield run.base


@pytest.fixture(scope="module")
def cloud(lab):
    with noauth_cloud(lab) as c:
        yield c


@pytest.fixture(scope="module")
def net(cloud):
    n = cloud.network.create_network(name="sdk-compute")
    cloud.network.create_subnet(network_id=n.id, ip_version=4, cidr="10.70.0.0/24")
    return n


def test_discovery_negotiates_a_microversion(cloud, lab):
    data = cloud.compute.get_endpoint_data()
    assert data.min_microversion == (2, 1)
    assert data.max_microversion == (2, 74)
    assert cloud.compute.get_endpoint().rstrip("/") == f"{lab}/compute/v2.1"


def test_hypervisors(cloud):
    hyps = {h.name: h for h in cloud.compute.hypervisors(details=True)}
    assert sorted(hyps) == ["compute-1", "compute-2", "compute-3", "compute-4"]
    assert hyps["compute-1"].state == "up"
    assert hyps["compute-1"].hypervisor_type == "switchyard-lab"


def test_boot_live_migrate_ovs_to_vrouter_and_delete(cloud, net):
    srv = cloud.compute.create_server(
        name="sdk-vm", networks=[{"uuid": net.id}], availability_zone="nova:compute-1"
    )
    srv = cloud.compute.wait_for_server(srv, wait=60, interval=0.2)
    assert srv.status == "ACTIVE"
    assert srv.compute_host == "compute-1"
    (port,) = list(cloud.network.ports(device_id=srv.id))
    assert port.binding_vif_type == "ovs"
    assert port.status == "ACTIVE"
    addr = srv.addresses["sdk-compute"][0]
    assert addr["addr"] == port.fixed_ips[0]["ip_address"]
    assert addr["OS-EXT-IPS-MAC:mac_addr"] == port.mac_address

    cloud.compute.live_migrate_server(srv, host="compute-4", block_migration="auto")
    deadline = time.monotonic() + 60
    while True:
        srv = cloud.compute.get_server(srv.id)
        if srv.status == "ACTIVE" and srv.task_state is None:
            break
        assert srv.status == "MIGRATING", srv.status
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert srv.compute_host == "compute-4"
    (after,) = list(cloud.network.ports(device_id=srv.id))
    assert after.binding_vif_type == "vrouter"
    assert after.binding_host_id == "compute-4"
    assert after.status == "ACTIVE"  # the server is ACTIVE once its ports are
    assert (after.mac_address, after.fixed_ips) == (port.mac_address, port.fixed_ips)
    migs = [m for m in cloud.compute.migrations() if m.server_id == srv.id]
    assert [(m.status, m.source_compute, m.dest_compute) for m in migs] == [
        ("completed", "compute-1", "compute-4")
    ]

    cloud.compute.delete_server(srv)
    cloud.compute.wait_for_delete(srv, wait=30, interval=0.2)
    assert list(cloud.network.ports(device_id=srv.id)) == []


def test_errors_are_nova_exceptions(cloud, net):
    with pytest.raises(exc.NotFoundException):
        cloud.compute.get_server("5a5a5a5a-0000-4000-8000-000000000000")
    srv = cloud.compute.create_server(
        name="sdk-err", networks=[{"uuid": net.id}], availability_zone="nova:compute-2"
    )
    srv = cloud.compute.wait_for_server(srv, wait=60, interval=0.2)
    try:
        with pytest.raises(exc.BadRequestException, match="Compute host compute-9 could not be found"):
            cloud.compute.live_migrate_server(srv, host="compute-9", block_migration="auto")
        with pytest.raises(exc.BadRequestException, match="to current host"):
            cloud.compute.live_migrate_server(srv, host="compute-2", block_migration="auto")
        with pytest.raises(exc.BadRequestException, match="'networks' is a required property"):
            cloud.compute.create_server(name="no-nets")
    finally:
        cloud.compute.delete_server(srv)
        cloud.compute.wait_for_delete(srv, wait=30, interval=0.2)
