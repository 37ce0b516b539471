"""`switchyard lab up --auth embedded --clouds-yaml PATH` as a user of an
OpenStack cloud takes it: openstacksdk reads the written clouds.yaml
(`switchyard` as admin, `switchyard-demo` as a member of project demo),
finds the network and compute endpoints in the catalog, and the demo user
boots a server on its own network through the compute API (whose calls to
the networking API carry its service user's token), which is ACTIVE with its
port bound; without a token every API answers 401."""

import os
import stat
import urllib.error
import urllib.request

import openstack
import pytest

from conftest import auth_lab



@pytest.fixture(scope="module")
def lab_auth(tmp_path_factory):
    clouds = tmp_path_factory.mktemp("clouds") / "clouds.yaml"
    with auth_lab(clouds, "switchyard-lab-auth-") as run:
        old = os.environ.get("OS_CLIENT_CONFIG_FILE")
        os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds)
        try:
            yield run, clouds
        finally:
            if old is None:
                os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
            else:
                os.environ["OS_CLIENT_CONFIG_FILE"] = old


def test_clouds_yaml_is_private_and_every_api_wants_a_token(lab_auth):
    run, clouds = lab_auth
    assert stat.S_IMODE(os.stat(clouds).st_mode) == 0o600
    for path in ["/v2.0/networks", "/compute/v2.1/servers", "/switchyard/v1/lab/guests"]:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(run.base + path, timeout=5)
        assert e.value.code == 401, path


def test_demo_boots_a_server_from_clouds_yaml(lab_auth):
    admin = openstack.connect(cloud="switchyard")
    demo = openstack.connect(cloud="switchyard-demo")
    assert demo.current_project.name == "demo"
    net = demo.network.create_network(name="demo-net")
    demo.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.71.0.0/24")
    srv = demo.compute.create_server(
        name="vm-demo", networks=[{"uuid": net.id}], availability_zone="nova:compute-2"
    )
    srv = demo.compute.wait_for_server(srv, wait=60, interval=0.2)
    assert srv.status == "ACTIVE"
    (port,) = list(demo.network.ports(device_id=srv.id))
    assert port.project_id == demo.current_project_id
    assert port.status == "ACTIVE"
    # The admin sees the port's binding.
    assert admin.network.get_port(port.id).binding_vif_type == "vrouter"
    demo.compute.delete_server(srv)
    demo.compute.wait_for_delete(srv, wait=30, interval=0.2)
    demo.network.delete_network(net)


def test_projects_are_isolated_on_the_compute_api(lab_auth):
    import openstack.exceptions as exc
    admin = openstack.connect(cloud="switchyard")
    demo = openstack.connect(cloud="switchyard-demo")
    net = admin.network.create_network(name="admin-only-net")
    admin.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.73.0.0/24")
    srv = admin.compute.create_server(
        name="vm-admin", networks=[{"uuid": net.id}], availability_zone="nova:compute-2"
    )
    srv = admin.compute.wait_for_server(srv, wait=60, interval=0.2)
    try:
        assert srv.id not in {s.id for s in demo.compute.servers()}
        with pytest.raises(exc.NotFoundException):
            demo.compute.get_server(srv.id)
        with pytest.raises(exc.ForbiddenException):
            list(demo.compute.hypervisors())
        assert {h.name for h in admin.compute.hypervisors()} >= {"compute-1", "compute-4"}
        assert srv.id in {s.id for s in admin.compute.servers(all_projects=True)}
    finally:
        admin.compute.delete_server(srv)
        admin.compute.wait_for_delete(srv, wait=30, interval=0.2)
        admin.network.delete_network(net)


def test_flavors_and_the_guest_image_from_the_catalog(lab_auth):
    demo = openstack.connect(cloud="switchyard-demo")
    flavors = {f.name: f for f in demo.compute.flavors()}
    assert flavors["m1.tiny"].ram == 512
    images = list(demo.image.images())
    assert [i.name for i in images] == ["switchyard-guest"]
    net = demo.network.create_network(name="fl-net")
    demo.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.76.0.0/24")
    srv = demo.compute.create_server(
        name="vm-fl", flavor_id=flavors["m1.tiny"].id, image_id=images[0].id,
        networks=[{"uuid": net.id}], availability_zone="nova:compute-4",
    )
    srv = demo.compute.wait_for_server(srv, wait=60, interval=0.2)
    try:
        assert srv.flavor.original_name == "m1.tiny"
        assert srv.image.id == images[0].id
        zones = [z.name for z in demo.compute.availability_zones()]
        assert zones == ["nova"]
    finally:
        demo.compute.delete_server(srv)
        demo.compute.wait_for_delete(srv, wait=30, interval=0.2)
        demo.network.delete_network(net)
