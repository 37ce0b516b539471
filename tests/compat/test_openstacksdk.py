"""openstacksdk (the real PyPI client) against the real switchyard binary.

Everything Neutron-facing goes through `conn.network.*` proxy calls; only agent
registration uses the internal /switchyard/v1 endpoint (see conftest.py).
Each test creates its own network(s) and cleans up after itself.
"""

import ipaddress
import re

import openstack
import openstack.exceptions as exc
import pytest

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


# --------------------------------------------------------------------------- networks


def test_network_default_vxlan_crud(conn, net_factory, uniq):
    name = f"compat-net-{uniq}"
    net = net_factory(name=name)
    assert UUID_RE.match(net.id)
    assert net.name == name
    assert net.is_admin_state_up is True
    assert net.status == "ACTIVE"
    # project network type is vxlan; MTU = 1500 - 50 (VXLAN over IPv4)
    assert net.provider_network_type == "vxlan"
    assert net.provider_physical_network is None
    assert 1000 <= net.provider_segmentation_id <= 1999
    assert net.mtu == 1450
    assert net.project_id == "admin"
    assert net.subnet_ids == []
    assert isinstance(net.revision_number, int)

    got = conn.network.get_network(net.id)
    assert got.id == net.id and got.name == name and got.mtu == 1450

    found = conn.network.find_network(name)
    assert found is not None and found.id == net.id
    assert conn.network.find_network(net.id).id == net.id
    assert conn.network.find_network(f"no-such-{uniq}") is None

    listed = [n.id for n in conn.network.networks(name=name)]
    assert listed == [net.id]

    rev = got.revision_number
    upd = conn.network.update_network(net, name=name + "-x", description="updated")
    assert upd.name == name + "-x"
    assert upd.description == "updated"
    assert upd.revision_number > rev
    assert conn.network.get_network(net.id).name == name + "-x"

    conn.network.delete_network(net)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_network(net.id)
    assert conn.network.find_network(name + "-x") is None


def test_network_provider_vlan(conn, net_factory, uniq):
    net = net_factory(
        name=f"compat-vlan-{uniq}",
        provider_network_type="vlan",
        provider_physical_network="physnet1",
    )
    assert net.provider_network_type == "vlan"
    assert net.provider_physical_network == "physnet1"
    assert 100 <= net.provider_segmentation_id <= 199
    assert net.mtu == 1500

    got = conn.network.get_network(net.id)
    assert (got.provider_network_type, got.provider_physical_network,
            got.provider_segmentation_id) == ("vlan", "physnet1", net.provider_segmentation_id)

    # An explicit segmentation id, and filtering on provider attributes.
    seg = net.provider_segmentation_id + 1 if net.provider_segmentation_id < 199 else 100
    net2 = net_factory(
        name=f"compat-vlan2-{uniq}",
        provider_network_type="vlan",
        provider_physical_network="physnet1",
        provider_segmentation_id=seg,
    )
    assert net2.provider_segmentation_id == seg
    ids = {n.id for n in conn.network.networks(provider_network_type="vlan",
                                               provider_segmentation_id=seg)}
    assert ids == {net2.id}

    # The same VLAN on the same physnet is taken.
    with pytest.raises(exc.ConflictException):
        conn.network.create_network(
            name=f"compat-vlan3-{uniq}",
            provider_network_type="vlan",
            provider_physical_network="physnet1",
            provider_segmentation_id=seg,
        )


def test_network_missing_raises_not_found(conn):
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(exc.NotFoundException) as ei:
        conn.network.get_network(missing)
    assert ei.value.status_code == 404
    # ResourceNotFound is the historical alias of NotFoundException.
    with pytest.raises(exc.ResourceNotFound):
        conn.network.get_network(missing)
    with pytest.raises(exc.NotFoundException):
        conn.network.find_network(missing, ignore_missing=False)
    with pytest.raises(exc.NotFoundException):
        conn.network.delete_network(missing, ignore_missing=False)
    # ignore_missing=True (the default for delete) swallows the 404.
    assert conn.network.delete_network(missing) is None


def test_network_pagination_follows_next_links(conn, net_factory, uniq):
    tag = f"page-{uniq}"
    mine = []
    for i in range(5):
        n = net_factory(name=f"compat-page-{uniq}-{i}")
        conn.network.set_tags(n, [tag])
        mine.append(n.id)

    # The server really pages: a raw limit=2 request returns 2 and a next link.
    r = conn.network.get("/networks?limit=2")
    assert r.status_code == 200
    body = r.json()
    assert len(body["networks"]) == 2
    rels = {link["rel"]: link["href"] for link in body.get("networks_links", [])}
    assert "next" in rels and "limit=2" in rels["next"] and "marker=" in rels["next"]

    # The SDK follows next links until the end and yields everything.
    everything = [n.id for n in conn.network.networks()]
    paged = [n.id for n in conn.network.networks(limit=2)]
    assert len(paged) == len(set(paged)), "a page repeated items"
    assert sorted(paged) == sorted(everything)
    assert set(mine) <= set(paged)

    # Paging combined with a filter.
    paged_tagged = [n.id for n in conn.network.networks(limit=2, tags=tag)]
    assert sorted(paged_tagged) == sorted(mine)

    # Sorted paging keeps the order across pages.
    by_name = [n.name for n in conn.network.networks(limit=2, tags=tag,
                                                     sort_key="name", sort_dir="desc")]
    assert by_name == sorted((f"compat-page-{uniq}-{i}" for i in range(5)), reverse=True)


def test_network_tags(conn, net_factory, uniq):
    net = net_factory()
    a, b, c = f"red-{uniq}", f"blue-{uniq}", f"green-{uniq}"
    conn.network.set_tags(net, [a, b])
    assert sorted(conn.network.get_network(net.id).tags) == sorted([a, b])

    other = net_factory()
    conn.network.set_tags(other, [b, c])

    assert [n.id for n in conn.network.networks(tags=a)] == [net.id]
    assert sorted(n.id for n in conn.network.networks(tags=b)) == sorted([net.id, other.id])
    assert [n.id for n in conn.network.networks(tags=f"{a},{b}")] == [net.id]
    assert sorted(n.id for n in conn.network.networks(any_tags=f"{a},{c}")) == sorted(
        [net.id, other.id])
    not_b = {n.id for n in conn.network.networks(not_tags=a)}
    assert other.id in not_b and net.id not in not_b

    # Replace the whole set; then clear it.
    conn.network.set_tags(net, [c])
    assert conn.network.get_network(net.id).tags == [c]
    conn.network.set_tags(net, [])
    assert conn.network.get_network(net.id).tags == []


def test_network_update_if_revision(conn, net_factory, uniq):
    net = net_factory()
    rev = conn.network.get_network(net.id).revision_number
    upd = conn.network.update_network(net, name=f"rev-{uniq}", if_revision=rev)
    assert upd.name == f"rev-{uniq}"
    assert upd.revision_number > rev
    # A stale revision in If-Match is refused with 412 and changes nothing.
    # (A fresh object: the SDK sends If-Match only when the header value changed
    # on the object, and `net` already carries revision_number=rev.)
    stale = conn.network.get_network(net.id)
    with pytest.raises(exc.PreconditionFailedException) as ei:
        conn.network.update_network(stale, name=f"stale-{uniq}", if_revision=rev)
    assert ei.value.status_code == 412
    assert conn.network.get_network(net.id).name == f"rev-{uniq}"


# --------------------------------------------------------------------------- subnets


def test_subnet_crud(conn, net_factory, uniq):
    net = net_factory()
    sub = conn.network.create_subnet(
        network_id=net.id, ip_version=4, cidr="10.31.0.0/24", name=f"compat-sub-{uniq}"
    )
    assert UUID_RE.match(sub.id)
    assert sub.network_id == net.id
    assert sub.cidr == "10.31.0.0/24"
    assert sub.ip_version == 4
    assert sub.gateway_ip == "10.31.0.1"
    assert sub.allocation_pools == [{"start": "10.31.0.2", "end": "10.31.0.254"}]
    assert sub.is_dhcp_enabled is True
    assert sub.dns_nameservers == []
    assert sub.host_routes == []

    assert conn.network.get_network(net.id).subnet_ids == [sub.id]
    assert conn.network.get_subnet(sub.id).cidr == "10.31.0.0/24"
    assert conn.network.find_subnet(f"compat-sub-{uniq}").id == sub.id
    assert [s.id for s in conn.network.subnets(network_id=net.id)] == [sub.id]
    assert [s.id for s in conn.network.subnets(cidr="10.31.0.0/24", network_id=net.id)] == [
        sub.id]

    upd = conn.network.update_subnet(
        sub, name=f"compat-sub2-{uniq}", dns_nameservers=["192.0.2.53", "192.0.2.54"]
    )
    assert upd.name == f"compat-sub2-{uniq}"
    assert upd.dns_nameservers == ["192.0.2.53", "192.0.2.54"]
    got = conn.network.get_subnet(sub.id)
    assert got.dns_nameservers == ["192.0.2.53", "192.0.2.54"]
    assert got.cidr == "10.31.0.0/24"  # unchanged

    conn.network.delete_subnet(sub)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_subnet(sub.id)
    assert conn.network.get_network(net.id).subnet_ids == []


def test_subnet_explicit_pools_and_gateway(conn, net_factory):
    net = net_factory()
    sub = conn.network.create_subnet(
        network_id=net.id,
        ip_version=4,
        cidr="10.32.0.0/24",
        gateway_ip="10.32.0.254",
        allocation_pools=[{"start": "10.32.0.10", "end": "10.32.0.20"}],
    )
    assert sub.gateway_ip == "10.32.0.254"
    assert sub.allocation_pools == [{"start": "10.32.0.10", "end": "10.32.0.20"}]

    # An auto-allocated address comes from the pool.
    port = conn.network.create_port(network_id=net.id)
    ip = ipaddress.ip_address(port.fixed_ips[0]["ip_address"])
    assert ipaddress.ip_address("10.32.0.10") <= ip <= ipaddress.ip_address("10.32.0.20")

    # Overlapping CIDR on the same network is refused.
    with pytest.raises(exc.BadRequestException):
        conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.32.0.128/25")


# --------------------------------------------------------------------------- ports


def test_port_crud_and_filters(conn, net_factory, uniq):
    net = net_factory()
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.33.0.0/24")

    # Auto fixed IP.
    p1 = conn.network.create_port(network_id=net.id, name=f"p1-{uniq}",
                                  device_id=f"dev-{uniq}")
    assert UUID_RE.match(p1.id)
    assert p1.network_id == net.id
    assert len(p1.fixed_ips) == 1
    assert p1.fixed_ips[0]["subnet_id"] == sub.id
    ip1 = p1.fixed_ips[0]["ip_address"]
    assert ipaddress.ip_address(ip1) in ipaddress.ip_network("10.33.0.0/24")
    assert ip1 != "10.33.0.1"  # not the gateway
    assert MAC_RE.match(p1.mac_address) and p1.mac_address.startswith("fa:16:3e:")
    assert p1.device_id == f"dev-{uniq}"
    assert p1.is_admin_state_up is True

    # Requested fixed IP and MAC.
    p2 = conn.network.create_port(
        network_id=net.id,
        name=f"p2-{uniq}",
        fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.33.0.50"}],
        mac_address="fa:16:3e:aa:bb:cc",
    )
    assert p2.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.33.0.50"}]
    assert p2.mac_address == "fa:16:3e:aa:bb:cc"

    # get / find / list with filters.
    assert conn.network.get_port(p2.id).mac_address == "fa:16:3e:aa:bb:cc"
    assert conn.network.find_port(f"p2-{uniq}").id == p2.id
    assert sorted(p.id for p in conn.network.ports(network_id=net.id)) == sorted([p1.id, p2.id])
    assert [p.id for p in conn.network.ports(network_id=net.id, device_id=f"dev-{uniq}")] == [
        p1.id]
    assert [p.id for p in conn.network.ports(mac_address="fa:16:3e:aa:bb:cc")] == [p2.id]
    assert [p.id for p in conn.network.ports(network_id=net.id,
                                             fixed_ips="ip_address=10.33.0.50")] == [p2.id]
    assert [p.id for p in conn.network.ports(fixed_ips=f"subnet_id={sub.id}",
                                             name=f"p1-{uniq}")] == [p1.id]

    # Update.
    upd = conn.network.update_port(p1, name=f"p1-renamed-{uniq}")
    assert upd.name == f"p1-renamed-{uniq}"
    assert conn.network.get_port(p1.id).name == f"p1-renamed-{uniq}"
    assert conn.network.get_port(p1.id).fixed_ips[0]["ip_address"] == ip1

    # Delete frees the address.
    conn.network.delete_port(p2)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_port(p2.id)
    assert [p.id for p in conn.network.ports(network_id=net.id)] == [p1.id]
    p3 = conn.network.create_port(
        network_id=net.id, fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.33.0.50"}]
    )
    assert p3.fixed_ips[0]["ip_address"] == "10.33.0.50"


def test_port_ip_only_request_bulk_create_and_multi_filter(conn, net_factory, uniq):
    net = net_factory()
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.36.0.0/24")
    # fixed_ips with only ip_address: the subnet is found from the address.
    p = conn.network.create_port(network_id=net.id, fixed_ips=[{"ip_address": "10.36.0.9"}])
    assert p.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.36.0.9"}]
    # Several fixed_ips filters are ANDed.
    hits = [x.id for x in conn.network.ports(
        fixed_ips=["ip_address=10.36.0.9", f"subnet_id={sub.id}"])]
    assert hits == [p.id]
    assert list(conn.network.ports(network_id=net.id, fixed_ips=["ip_address=10.36.0.8"])) == []
    # Bulk create (POST /ports with a "ports" list).
    made = list(conn.network.create_ports([
        {"network_id": net.id, "name": f"b1-{uniq}"},
        {"network_id": net.id, "name": f"b2-{uniq}"},
    ]))
    assert [m.name for m in made] == [f"b1-{uniq}", f"b2-{uniq}"]
    ips = {m.fixed_ips[0]["ip_address"] for m in made}
    assert len(ips) == 2 and "10.36.0.9" not in ips
    assert len(list(conn.network.ports(network_id=net.id))) == 3


def test_duplicate_ip_conflict(conn, net_factory):
    net = net_factory()
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.34.0.0/24")
    conn.network.create_port(network_id=net.id,
                             fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.34.0.7"}])
    with pytest.raises(exc.ConflictException) as ei:
        conn.network.create_port(network_id=net.id,
                                 fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.34.0.7"}])
    assert ei.value.status_code == 409
    assert "10.34.0.7" in str(ei.value)
    # Nothing was half-created.
    assert len(list(conn.network.ports(network_id=net.id))) == 1


def test_duplicate_mac_conflict(conn, net_factory):
    net = net_factory()
    conn.network.create_port(network_id=net.id, mac_address="fa:16:3e:12:34:56")
    with pytest.raises(exc.ConflictException):
        conn.network.create_port(network_id=net.id, mac_address="fa:16:3e:12:34:56")


def test_network_in_use_conflict(conn, net_factory):
    net = net_factory()
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.35.0.0/24")
    port = conn.network.create_port(network_id=net.id, device_id="vm-1",
                                    device_owner="compute:nova")
    with pytest.raises(exc.ConflictException):
        conn.network.delete_network(net)
    conn.network.delete_port(port)
    conn.network.delete_network(net)
    with pytest.raises(exc.NotFoundException):
        conn.network.get_network(net.id)


# --------------------------------------------------------------------------- binding


def _bound(conn, net, host, **kw):
    p = conn.network.create_port(network_id=net.id, binding_host_id=host, **kw)
    return p, conn.network.get_port(p.id)


def test_binding_ovs(conn, agents, net_factory):
    net = net_factory()
    conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.40.0.0/24")
    p, got = _bound(conn, net, "compute-1")
    for port in (p, got):
        assert port.binding_host_id == "compute-1"
        assert port.binding_vnic_type == "normal"
        assert port.binding_vif_type == "ovs"
        assert port.binding_vif_details.get("bridge_name") == "br-int"
    assert [x.id for x in conn.network.ports(binding_host_id="compute-1",
                                             network_id=net.id)] == [p.id]


def test_binding_vrouter(conn, agents, net_factory):
    net = net_factory()
    p, got = _bound(conn, net, "compute-2")
    assert p.binding_vif_type == "vrouter"
    assert got.binding_vif_type == "vrouter"
    assert got.binding_host_id == "compute-2"


def test_binding_sriov_direct(conn, agents, net_factory):
    net = net_factory()
    p, got = _bound(conn, net, "compute-3", binding_vnic_type="direct")
    for port in (p, got):
        assert port.binding_vnic_type == "direct"
        assert port.binding_vif_type == "hw_veb"
        vlan = port.binding_vif_details["vlan"]
        assert isinstance(vlan, str) and vlan.isdigit() and 1 <= int(vlan) <= 4094
        assert port.binding_vif_details.get("physical_network") == "physnet1"


def test_binding_unknown_host_fails(conn, agents, net_factory):
    net = net_factory()
    p, got = _bound(conn, net, "no-such-host")
    assert p.binding_vif_type == "binding_failed"
    assert got.binding_vif_type == "binding_failed"


def test_binding_rebind_via_update(conn, agents, net_factory):
    net = net_factory()
    p = conn.network.create_port(network_id=net.id)
    assert p.binding_vif_type == "unbound"
    assert not p.binding_host_id
    upd = conn.network.update_port(p, binding_host_id="compute-1")
    assert upd.binding_vif_type == "ovs"
    upd = conn.network.update_port(p, binding_host_id="compute-2")
    assert upd.binding_vif_type == "vrouter"
    assert conn.network.get_port(p.id).binding_host_id == "compute-2"


# --------------------------------------------------------------------------- extensions


def test_extensions(conn):
    aliases = {e.alias for e in conn.network.extensions()}
    for alias in ("binding", "binding-extended", "provider", "standard-attr-tag"):
        assert alias in aliases, f"{alias} missing from {sorted(aliases)}"
    # find_extension does GET /v2.0/extensions/{alias} first.
    ext = conn.network.find_extension("binding-extended", ignore_missing=False)
    assert ext.alias == "binding-extended"
    assert ext.name
    assert conn.network.find_extension("no-such-extension") is None
    with pytest.raises(exc.NotFoundException):
        conn.network.find_extension("no-such-extension", ignore_missing=False)


def test_unversioned_endpoint_override_also_works(server):
    """Both forms of network_endpoint_override reach the same API."""
    root = openstack.connection.Connection(auth_type="none", network_endpoint_override=f"{server.base}/")
    try:
        net = root.network.create_network(name="via-root")
        assert root.network.get_network(net.id).name == "via-root"
        root.network.delete_network(net)
    finally:
        root.close()


# --------------------------------------------------------------------------- quotas


def test_quotas(conn, net_factory, uniq):
    project = f"quota-{uniq}"
    q = conn.network.get_quota(project)
    assert (q.networks, q.subnets, q.ports, q.routers, q.floating_ips) == (100, 100, 500, 10, 50)
    q = conn.network.update_quota(project, networks=3, ports=-1)
    assert (q.networks, q.ports) == (3, -1)
    assert conn.network.get_quota(project).networks == 3
    d = conn.network.get_quota(project, details=True)
    assert d.networks == {"limit": 3, "used": 0, "reserved": 0}
    assert conn.network.get_quota_default(project).networks == 100
    assert project in {x.project_id for x in conn.network.quotas()}
    with pytest.raises(exc.BadRequestException):
        conn.network.update_quota(project, networks=-5)
    conn.network.delete_quota(project)
    assert conn.network.get_quota(project).networks == 100
    # Enforcement: the admin's own project at its limit gets OverQuota (409).
    me = conn.network.get_quota("admin", details=True)
    used = me.networks["used"]
    conn.network.update_quota("admin", networks=used + 1)
    try:
        net_factory(name=f"q1-{uniq}")
        with pytest.raises(exc.ConflictException, match="Quota exceeded for resources"):
            net_factory(name=f"q2-{uniq}")
    finally:
        conn.network.delete_quota("admin")
