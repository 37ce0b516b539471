"""openstacksdk's L3 calls (routers, interfaces, gateways, floating IPs)
against the real switchyard binary, as an operator's scripts make them."""

import openstack.exceptions as exc
import pytest


@pytest.fixture
def gateway_agent(server, agents):
    status, body = server.report(
        {"host": "gateway", "agent_type": "Gateway agent",
         "configurations": {"tunneling_ip": "192.0.2.1"}},
    )
    assert status in (200, 201), (status, body)
    return body


@pytest.fixture
def l3(conn, gateway_agent, net_factory, uniq):
    """An external network, a project network with a subnet, and cleanup of
    every router and floating IP the test makes."""
    public = net_factory(name=f"public-{uniq}", is_router_external=True,
                         provider_network_type="flat",
                         provider_physical_network=f"ext-{uniq}")
    conn.network.create_subnet(network_id=public.id, ip_version=4, cidr="203.0.113.0/24",
                               gateway_ip="203.0.113.1", is_dhcp_enabled=False)
    net = net_factory()
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.60.0.0/24")
    made = {"routers": [], "fips": []}
    yield public, net, sub, made
    for f in made["fips"]:
        conn.network.delete_ip(f, ignore_missing=True)
    for r in made["routers"]:
        for p in conn.network.ports(device_id=r, device_owner="network:router_interface"):
            conn.network.remove_interface_from_router(r, port=p.id)
        conn.network.update_router(r, external_gateway_info={})
        conn.network.delete_router(r, ignore_missing=True)


def test_router_with_gateway_and_interface(conn, l3):
    public, net, sub, made = l3
    r = conn.network.create_router(name="r1", external_gateway_info={"network_id": public.id})
    made["routers"].append(r.id)
    assert r.status == "ACTIVE"
    assert r.external_gateway_info["network_id"] == public.id
    assert r.external_gateway_info["enable_snat"] is True
    ip = r.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    assert ip.startswith("203.0.113.")

    info = conn.network.add_interface_to_router(r, subnet=sub.id)
    assert info["subnet_id"] == sub.id and info["id"] == r.id
    port = conn.network.get_port(info["port_id"])
    assert port.device_owner == "network:router_interface"
    assert port.fixed_ips[0]["ip_address"] == "10.60.0.1"
    assert port.binding_host_id == "gateway"

    with pytest.raises(exc.BadRequestException, match="already has a port on subnet"):
        conn.network.add_interface_to_router(r, subnet=sub.id)
    with pytest.raises(exc.ConflictException, match="ports still attached"):
        conn.network.delete_router(r)
    with pytest.raises(exc.ConflictException):
        conn.network.delete_port(port)

    routes = [{"destination": "172.16.0.0/16", "nexthop": "10.60.0.254"}]
    assert conn.network.update_router(r, routes=routes).routes == routes
    conn.network.update_router(r, routes=[])
    # extraroute-atomic, as `openstack router add/remove route` calls it.
    more = [{"destination": "172.17.0.0/16", "nexthop": "10.60.0.253"}]
    got = conn.network.add_extra_routes_to_router(r, {"router": {"routes": routes + more}})
    assert got.routes == routes + more
    got = conn.network.remove_extra_routes_from_router(r, {"router": {"routes": routes}})
    assert got.routes == more
    with pytest.raises(exc.BadRequestException):
        conn.network.add_extra_routes_to_router(
            r, {"router": {"routes": [{"destination": "172.18.0.0/16", "nexthop": "192.0.2.1"}]}})
    conn.network.remove_extra_routes_from_router(r, {"router": {"routes": more}})
    conn.network.remove_interface_from_router(r, subnet=sub.id)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_port(info["port_id"])
    assert conn.network.find_router(r.id).id == r.id
    assert r.id in {x.id for x in conn.network.routers()}


def test_floating_ip_association(conn, agents, l3):
    public, net, sub, made = l3
    r = conn.network.create_router(name="r2", external_gateway_info={"network_id": public.id})
    made["routers"].append(r.id)
    conn.network.add_interface_to_router(r, subnet=sub.id)
    vm = conn.network.create_port(network_id=net.id, binding_host_id="compute-2",
                                  device_owner="compute:nova", device_id="vm-compat")
    fip = conn.network.create_ip(floating_network_id=public.id)
    made["fips"].append(fip.id)
    assert fip.status == "DOWN" and fip.port_id is None
    assert fip.floating_ip_address.startswith("203.0.113.")

    fip = conn.network.update_ip(fip, port_id=vm.id)
    assert fip.port_id == vm.id
    assert fip.router_id == r.id
    assert fip.fixed_ip_address == vm.fixed_ips[0]["ip_address"]
    assert fip.status == "ACTIVE"
    assert fip.port_details["mac_address"] == vm.mac_address
    assert [f.id for f in conn.network.ips(port_id=vm.id)] == [fip.id]

    with pytest.raises(exc.ConflictException):
        conn.network.remove_interface_from_router(r, subnet=sub.id)
    fip = conn.network.update_ip(fip, port_id=None)
    assert fip.port_id is None and fip.status == "DOWN"
    conn.network.delete_ip(fip)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_ip(fip.id)
    conn.network.delete_port(vm)


def test_floating_ip_needs_an_external_network(conn, l3):
    _, net, _, _ = l3
    with pytest.raises(exc.BadRequestException, match="not a valid external network"):
        conn.network.create_ip(floating_network_id=net.id)
