"""The web console in a real browser.

Playwright (from PyPI) drives Debian's chromium, headless, against
`switchyard lab up`: the console is served by the lab itself at /console/,
reads the Neutron and compute APIs, and follows the commit stream
(/switchyard/v1/events), so what changes through any client appears on the
open page without a reload. `scripts/test.sh` installs both; a missing
browser fails the test rather than skipping it.

Screenshots of each page go to $SWITCHYARD_SCREENSHOTS when it is set
(docs/console.md shows them).
"""

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import openstack
import pytest
import yaml
from playwright.sync_api import expect, sync_playwright

from conftest import auth_lab, noauth_cloud, noauth_lab

CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("SWITCHYARD_SCREENSHOTS")


def shoot(page, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), (
        f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium package"
    )
    with sync_playwright() as p:
        # Root in CI: chromium's sandbox needs an unprivileged user.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def lab():
    with noauth_lab("switchyard-console-") as run:
        assert any(f"console       {run.base}/console/" in l for l in run.lines), run.lines
        yield run.base


@pytest.fixture(scope="module")
def cloud(lab):
    with noauth_cloud(lab) as c:
        yield c


@pytest.fixture(scope="module")
def demo(cloud):
    """The seed's three VMs: OVS on compute-1, vRouter on compute-2, an
    SR-IOV VF (a `direct` port made first) on compute-3."""
    net = cloud.network.create_network(name="demo-net")
    cloud.network.create_subnet(network_id=net.id, ip_version=4, cidr="50.50.50.0/24")
    vf = cloud.network.create_port(network_id=net.id, name="vm-sriov-port", binding_vnic_type="direct")
    servers = []
    for name, host, nets in [
        ("vm-ovs", "compute-1", [{"uuid": net.id}]),
        ("vm-vrouter", "compute-2", [{"uuid": net.id}]),
        ("vm-sriov", "compute-3", [{"port": vf.id}]),
    ]:
        servers.append(cloud.compute.create_server(name=name, networks=nets, availability_zone=f"nova:{host}"))
    for s in servers:
        assert cloud.compute.wait_for_server(s, wait=60, interval=0.2).status == "ACTIVE"
    return net


def test_the_console_is_served_with_its_policy(lab):
    with urllib.request.urlopen(f"{lab}/console/") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert b"switchyard console" in r.read()


def test_instances_show_the_demo_vms_with_their_backends_and_follow_changes(lab, cloud, demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{lab}/console/#/instances")
    expect(page.locator("#live")).to_have_text("live")
    rows = page.locator("#instances tbody tr")
    expect(rows).to_have_count(3)
    for name, host, vif in [
        ("vm-ovs", "compute-1", "ovs"),
        ("vm-vrouter", "compute-2", "vrouter"),
        ("vm-sriov", "compute-3", "hw_veb"),
    ]:
        row = page.locator(f'#instances tr[data-server="{name}"]')
        expect(row).to_contain_text(host)
        expect(row).to_contain_text("ACTIVE")
        expect(row.locator(f'[data-vif-type="{vif}"]')).to_be_visible()
    shoot(page, "instances")

    # A server booted by another client appears on the open page, bound.
    s = cloud.compute.create_server(
        name="vm-extra", networks=[{"uuid": demo.id}], availability_zone="nova:compute-2"
    )
    extra = page.locator('#instances tr[data-server="vm-extra"]')
    expect(extra).to_contain_text("ACTIVE", timeout=30_000)
    expect(extra.locator('[data-vif-type="vrouter"]')).to_be_visible()
    # ...and goes when it is deleted.
    cloud.compute.delete_server(s)
    expect(extra).to_have_count(0, timeout=30_000)
    page.close()


def unlabelled(page):
    """Form controls and buttons shown with no accessible name (a <label>,
    an aria-label, or a button's text)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
          .filter((e) => e.getClientRects().length > 0)
          .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !(e.tagName === 'BUTTON' && e.textContent.trim()))
          .map((e) => e.outerHTML.slice(0, 120))"""
    )


def errors_of(page):
    """The page's console errors and uncaught exceptions, as they come."""
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_boot_live_migrate_and_delete_from_the_instances_page(lab, cloud, demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = errors_of(page)
    page.on("dialog", lambda d: d.accept())  # the confirmation before a delete
    page.goto(f"{lab}/console/#/instances")
    expect(page.locator("#instances tbody tr")).to_have_count(3)

    # Boot vm-migrate on compute-1 (OVS) from the form, with a flavor and
    # the image.
    free = cloud.network.create_port(network_id=demo.id, name="free-port")
    page.click("details.boot summary")
    page.fill("#boot-name", "vm-migrate")
    page.select_option("#boot-network", label="demo-net")
    page.select_option("#boot-flavor", label="m1.tiny")
    page.select_option("#boot-image", label="switchyard-guest")
    page.select_option("#boot-host", "compute-1")
    assert unlabelled(page) == []
    page.click("form#boot button[type=submit]")
    row = page.locator('#instances tr[data-server="vm-migrate"]')
    expect(row).to_contain_text("ACTIVE", timeout=30_000)
    expect(row).to_contain_text("compute-1")
    expect(row.locator('[data-vif-type="ovs"]')).to_be_visible()
    booted = cloud.compute.find_server("vm-migrate")
    assert booted.flavor.id == "1" or booted.flavor.name == "m1.tiny", booted.flavor
    assert booted.image.id, booted.image

    # ...and vm-port on an existing free port, on compute-2 (vRouter).
    page.fill("#boot-name", "vm-port")
    page.select_option("#boot-network", f"port:{free.id}")
    page.select_option("#boot-flavor", "")
    page.select_option("#boot-image", "")
    page.select_option("#boot-host", "compute-2")
    page.click("form#boot button[type=submit]")
    by_port = page.locator('#instances tr[data-server="vm-port"]')
    expect(by_port).to_contain_text("ACTIVE", timeout=30_000)
    expect(by_port.locator('[data-vif-type="vrouter"]')).to_be_visible()
    assert cloud.network.get_port(free.id).device_id == cloud.compute.find_server("vm-port").id
    page.click('button[aria-label="Delete vm-port"]')
    expect(by_port).to_have_count(0, timeout=30_000)
    cloud.network.delete_port(free.id, ignore_missing=True)

    # Live-migrate it to compute-4 (vRouter) under a ping stream from
    # vm-vrouter. The host picker says which hosts would take it and why
    # not the others.
    page.click('button[aria-label="Live-migrate vm-migrate"]')
    hosts = page.locator("#migrate-hosts")
    expect(hosts.locator("li", has_text="compute-1")).to_contain_text("the instance runs on compute-1")
    expect(page.locator("#migrate-to-compute-1")).to_be_disabled()
    expect(hosts.locator("li", has_text="compute-3")).to_contain_text(
        "cannot plug a port of binding:vnic_type normal"
    )
    expect(page.locator("#migrate-to-compute-4")).to_have_attribute("data-fits", "true")
    assert unlabelled(page) == []
    shoot(page, "migrate-picker")
    page.check("#migrate-to-compute-4")
    page.select_option("#migrate-peer", "vm-vrouter")
    page.click("#migrate button[type=submit]")
    # The progress view: every step done, in order, then the pings lost.
    steps = page.locator("#migrate-steps li")
    expect(steps).to_have_count(5)
    expect(page.locator('#migrate-steps li[data-done="true"]')).to_have_count(5, timeout=60_000)
    expect(page.locator("#migrate-status")).to_contain_text("completed: compute-1 → compute-4")
    expect(page.locator("#migrate-pings")).to_contain_text("longest outage", timeout=30_000)
    lost = page.locator("#migrate-pings").inner_text()
    m = re.search(r"Lost (\d+) of (\d+) pings", lost)
    assert m and int(m.group(2)) > 50 and int(m.group(1)) <= 10, lost
    shoot(page, "migration-progress")
    page.click("#migrate >> text=Close")
    expect(page.locator("#migrate")).to_have_count(0)
    expect(row).to_contain_text("compute-4", timeout=60_000)
    expect(row).to_contain_text("ACTIVE", timeout=60_000)
    expect(row.locator('[data-vif-type="vrouter"]')).to_be_visible()
    mig = page.locator("#migrations tbody tr").first
    expect(mig).to_contain_text("vm-migrate")
    expect(mig).to_contain_text("compute-1 → compute-4")
    expect(mig).to_contain_text("completed")
    shoot(page, "migrated")

    # compute-4's node page: its agent runs the migrated VM's interface.
    srv = cloud.compute.find_server("vm-migrate")
    (port,) = list(cloud.network.ports(device_id=srv.id))
    page.click("nav >> text=Nodes")
    expect(page.locator('#nodes tr[data-node="compute-4"]')).to_contain_text("converged")
    page.click('#nodes tr[data-node="compute-4"] a')
    expect(page).to_have_url(f"{lab}/console/#/nodes/compute-4")
    iface = page.locator(f'#interfaces tr[data-port="{port.id}"]')
    expect(iface).to_contain_text(port.mac_address)
    expect(iface.locator('[data-vif-type="vrouter"]')).to_be_visible()
    expect(iface).to_contain_text("ACTIVE")
    shoot(page, "node")
    page.click("nav >> text=Instances")

    # An SR-IOV VF cannot move to a vRouter host: the dialog says why.
    page.click('button[aria-label="Live-migrate vm-sriov"]')
    expect(page.locator("#migrate-hosts li", has_text="compute-4")).to_contain_text(
        "not expected to take it: host compute-4 (vrouter networking) cannot plug"
    )
    page.check("#migrate-to-compute-4")
    page.click("#migrate button[type=submit]")
    expect(page.locator("#migrate-error")).to_contain_text("direct cannot be bound on compute-4")
    shoot(page, "migration-refused")
    page.click("#migrate >> text=Cancel")
    expect(page.locator('#instances tr[data-server="vm-sriov"]')).to_contain_text("compute-3")

    page.click('button[aria-label="Delete vm-migrate"]')
    expect(row).to_have_count(0, timeout=30_000)
    # The refused migration answered 400: the browser logs that request.
    assert [e for e in errors if "status of 400" not in e] == [], errors
    page.close()


def test_closing_the_migrate_dialog_before_the_request_sends_none(lab, cloud, demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{lab}/console/#/instances")
    srv = cloud.compute.find_server("vm-ovs")
    before = len(list(cloud.compute.migrations(instance_uuid=srv.id)))
    # The ping stream's start is held until the dialog is closed.
    held = []

    def hold_the_start(route):
        if not held and route.request.method == "PUT":
            held.append(route)
        else:
            route.continue_()

    page.route("**/switchyard/v1/lab/guests/*/stream", hold_the_start)
    page.click('button[aria-label="Live-migrate vm-ovs"]')
    page.check("#migrate-to-compute-4")
    page.select_option("#migrate-peer", "vm-vrouter")
    page.click("#migrate button[type=submit]")
    for _ in range(500):
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "the stream's start was asked"
    page.keyboard.press("Escape")
    expect(page.locator("#migrate")).to_have_count(0)
    # The stream, started only now, is stopped by the page...
    stream = f"{lab}/switchyard/v1/lab/guests/vm-vrouter/stream"
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url == stream, timeout=10_000
    ) as stopped:
        held[0].continue_()
    assert stopped.value.status == 200, stopped.value.status
    page.unroute("**/switchyard/v1/lab/guests/*/stream")
    # ...and nothing else runs it.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(stream, method="DELETE"))
    assert e.value.code == 404
    page.wait_for_timeout(500)
    assert len(list(cloud.compute.migrations(instance_uuid=srv.id))) == before
    assert cloud.compute.get_server(srv.id).compute_host == "compute-1"
    page.close()


def test_verify_runs_the_matrix_and_shows_it_green(lab, demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{lab}/console/#/verify")
    expect(page.locator("#verify-status")).to_contain_text("No run yet")
    page.click("#verify-run")
    # The three demo VMs, each to the two others.
    expect(page.locator("#verify-status")).to_contain_text("All 6 paths as expected", timeout=120_000)
    expect(page.locator("#verify-grid td.cell.ok")).to_have_count(6)
    expect(page.locator('#verify-grid td[data-ok="false"]')).to_have_count(0)
    cell = page.locator('#verify-grid td[data-from="vm-ovs"][data-to="vm-sriov"]')
    expect(cell).to_contain_text(" ms")
    expect(page.locator("ul.history li")).to_have_count(1)
    shoot(page, "verify")
    page.close()

    # The endpoint the page uses checks its body like the rest of the API.
    req = urllib.request.Request(
        f"{lab}/switchyard/v1/lab/verify",
        data=json.dumps({"verify": {"bogus": 1}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400
    assert "bogus" in json.loads(e.value.read())["NeutronError"]["message"]


def test_networks_and_ports_pages_follow_the_commit_stream(lab, cloud, demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{lab}/console/#/networks")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator('#networks tr[data-network="demo-net"]')).to_contain_text("50.50.50.0/24")
    shoot(page, "networks")
    # A network made through the API shows up without a reload.
    n = cloud.network.create_network(name="made-elsewhere")
    expect(page.locator('#networks tr[data-network="made-elsewhere"]')).to_be_visible()
    cloud.network.delete_network(n)
    expect(page.locator('#networks tr[data-network="made-elsewhere"]')).to_have_count(0)

    page.click("nav >> text=Ports")
    expect(page).to_have_url(f"{lab}/console/#/ports")
    vf = cloud.network.find_port("vm-sriov-port")
    row = page.locator(f'#ports tr[data-port="{vf.id}"]')
    expect(row).to_contain_text("compute-3")
    expect(row.locator('[data-vif-type="hw_veb"]')).to_be_visible()
    shoot(page, "ports")
    # The port's page: its binding levels, and the node that applied it.
    row.locator("a").click()
    expect(page).to_have_url(f"{lab}/console/#/ports/{vf.id}")
    expect(page.locator("#applied-by")).to_contain_text("compute-3")
    levels = page.locator('table.levels[data-host="compute-3"] tbody tr')
    expect(levels).to_have_count(2)
    expect(levels.nth(0)).to_contain_text("fabric")
    expect(levels.nth(0)).to_contain_text("vxlan")
    expect(levels.nth(1)).to_contain_text("sriovnicswitch")
    expect(levels.nth(1)).to_contain_text("physnet1")
    expect(page.locator("#vif-details")).to_contain_text('"vlan"')
    expect(page.locator("dl.facts")).to_contain_text("compute:nova")
    expect(page.locator("dl.facts")).not_to_contain_text("[object")
    shoot(page, "port")
    page.close()


def test_ports_are_paged(lab, cloud, browser):
    net = cloud.network.create_network(name="paged")
    try:
        made = [cloud.network.create_port(network_id=net.id, name=f"paged-{i:02}") for i in range(60)]
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{lab}/console/#/ports")
        expect(page.locator("#ports tbody tr")).to_have_count(50)
        page.click("text=Next")
        expect(page.locator("text=ports 51–")).to_be_visible()
        page.click("text=Previous")
        expect(page.locator("text=ports 1–50")).to_be_visible()
        page.close()
    finally:
        for p in made:
            cloud.network.delete_port(p)
        cloud.network.delete_network(net)


def test_a_narrow_window_still_reaches_every_page(lab, demo, browser):
    page = browser.new_page(viewport={"width": 420, "height": 800})
    page.goto(f"{lab}/console/")
    expect(page.locator("#instances tbody tr")).to_have_count(3)
    # Keyboard only: the pages are links in order after the skip link and the title.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{lab}/console/#/networks")
    page.close()


def _status(base, path, headers=None):
    """The status of GET `path`, sent as written (no client-side path
    normalisation)."""
    host, port = base.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        return c.getresponse().status
    finally:
        c.close()


def test_signing_in_with_the_labs_identity(tmp_path, browser):
    clouds = tmp_path / "clouds.yaml"
    with auth_lab(clouds, "switchyard-console-auth-") as run:
        admin_password = yaml.safe_load(clouds.read_text())["clouds"]["switchyard"]["auth"]["password"]
        # The console's files need no token; nothing else under /console/
        # is let through, and the commit stream needs a token.
        assert _status(run.base, "/console/") == 200
        assert _status(run.base, "/console/app.js") == 200
        assert _status(run.base, "/console/../v2.0/networks") == 401
        assert _status(run.base, "/console/%2e%2e/v2.0/networks") == 401
        assert _status(run.base, "/switchyard/v1/events") == 401
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{run.base}/console/")
        expect(page.locator("#signin-panel")).to_be_visible()
        page.fill("#si-user", "admin")
        page.fill("#si-password", "not the password")
        page.click("form#signin button")
        expect(page.locator("#signin-error")).to_contain_text("Sign-in failed")
        page.fill("#si-password", admin_password)
        page.click("form#signin button")
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("#who")).to_have_text("admin @ admin")
        expect(page.locator("#instances")).to_be_visible()
        shoot(page, "signed-in")
        page.click("#signout")
        expect(page.locator("#signin-panel")).to_be_visible()

        # A reader of the admin project: sees its instance, and no action.
        cloud = openstack.connect(
            auth_url=f"{run.base}/identity/v3", username="admin", password=admin_password,
            project_name="admin", user_domain_name="Default", project_domain_name="Default",
            region_name="RegionOne",
        )
        try:
            net = cloud.network.create_network(name="reader-net")
            cloud.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.77.0.0/24")
            srv = cloud.compute.create_server(
                name="vm-read", networks=[{"uuid": net.id}], availability_zone="nova:compute-2"
            )
            cloud.compute.wait_for_server(srv, wait=60, interval=0.2)
            admin_project = cloud.current_project_id
            reader = cloud.identity.find_role("reader")
            user = cloud.identity.create_user(name="rita", password="r1ta-reads", domain_id="default")
            cloud.identity.assign_project_role_to_user(admin_project, user, reader)
        finally:
            cloud.close()
        page.fill("#si-user", "rita")
        page.fill("#si-password", "r1ta-reads")
        page.click("form#signin button")
        expect(page.locator("#who")).to_have_text("rita @ admin")
        row = page.locator('#instances tr[data-server="vm-read"]')
        expect(row).to_contain_text("ACTIVE")
        # Binding attributes are an admin's in Neutron's policy: not shown.
        expect(row.locator(".badge")).to_have_text("hidden")
        expect(page.locator("#instances button")).to_have_count(0)
        expect(page.locator("details.boot")).to_have_count(0)
        expect(page.locator("#page")).to_contain_text("Live migrations are shown to admins.")
        shoot(page, "reader")
        for name, note in [("Nodes", "shown to admins"), ("Topology", "shown to admins"),
                           ("Verify", "Verify runs are an admin's")]:
            page.click(f"nav >> text={name}")
            expect(page.locator("#page")).to_contain_text(note)
        page.click("nav >> text=Networks")
        expect(page.locator('#networks tr[data-network="reader-net"]')).to_be_visible()
        page.click("#signout")
        page.close()


def test_topology_draws_the_nodes_and_animates_a_migration(lab, cloud, demo, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = errors_of(page)
    public = cloud.network.find_network("public")
    subnet = next(cloud.network.subnets(network_id=demo.id))
    router = cloud.network.create_router(name="r-topo", external_gateway_info={"network_id": public.id})
    cloud.network.add_interface_to_router(router, subnet=subnet.id)
    srv = None
    try:
        page.goto(f"{lab}/console/#/topology")
        table = page.locator("#placement")
        # OVS and SR-IOV leave their node on the network's VLAN on physnet1
        # (the second binding level), vRouter on its VXLAN VNI.
        for name, host, path in [
            ("vm-ovs", "compute-1", "(physnet1)"),
            ("vm-vrouter", "compute-2", "VXLAN"),
            ("vm-sriov", "compute-3", "(physnet1)"),
        ]:
            row = table.locator(f'tr[data-device="{name}"]')
            expect(row).to_have_attribute("data-host", host)
            expect(row).to_contain_text(path)
        expect(table.locator('tr[data-device="r-topo"]')).to_have_attribute("data-host", "gateway")
        # The graph: the fabric, every node on it, the VMs on their nodes.
        page.wait_for_function("() => window.switchyardTopology && window.switchyardTopology.nodes().length > 0")
        ids = page.evaluate("() => window.switchyardTopology.nodes().map(n => n.id())")
        for want in ["fabric", "host:compute-1", "host:compute-2", "host:compute-3", "host:compute-4",
                     "host:gateway", "internet"]:
            assert want in ids, (want, ids)
        # compute-1's link to the fabric carries the VLAN, compute-2's the VNI.
        link = page.evaluate("h => window.switchyardTopology.getElementById('link:' + h).data('label')", "compute-2")
        assert link.startswith("VXLAN "), link
        shoot(page, "topology")

        # A VM booted and live-migrated elsewhere moves on the open graph.
        srv = cloud.compute.create_server(
            name="vm-topo", networks=[{"uuid": demo.id}], availability_zone="nova:compute-1"
        )
        srv = cloud.compute.wait_for_server(srv, wait=60, interval=0.2)
        row = table.locator('tr[data-device="vm-topo"]')
        expect(row).to_have_attribute("data-host", "compute-1")
        edge = "s => { const e = window.switchyardTopology.getElementById('on:' + s); return e.nonempty() ? e.data('target') : null }"
        page.wait_for_function(f"s => ({edge})(s) === 'host:compute-1'", arg=srv.id)
        pos = "s => window.switchyardTopology.getElementById('vm:' + s).position()"
        before = page.evaluate(pos, srv.id)
        cloud.compute.live_migrate_server(srv, host="compute-4", block_migration="auto")
        expect(row).to_have_attribute("data-host", "compute-4", timeout=60_000)
        expect(row).to_contain_text("VXLAN")
        page.wait_for_function(f"s => ({edge})(s) === 'host:compute-4'", arg=srv.id)
        # The layout runs again, animated: the VM is drawn somewhere else.
        page.wait_for_function(
            "([s, b]) => { const p = window.switchyardTopology.getElementById('vm:' + s).position();"
            " return p.x !== b.x || p.y !== b.y }",
            arg=[srv.id, before],
        )
        shoot(page, "topology-migrated")
        assert not errors, errors
    finally:
        if srv is not None:
            cloud.compute.delete_server(srv)
            cloud.compute.wait_for_delete(srv, wait=60, interval=0.2)
        cloud.network.remove_interface_from_router(router, subnet=subnet.id)
        cloud.network.update_router(router, external_gateway_info={})
        cloud.network.delete_router(router)
        page.close()


def test_instances_are_paged(lab, cloud, demo, browser):
    # Nova's default quota is 10 instances: an admin lifts it for the test
    # (for the project the demo VMs are in).
    project = cloud.compute.find_server("vm-ovs").project_id
    req = urllib.request.Request(
        f"{lab}/compute/v2.1/os-quota-sets/{project}",
        data=json.dumps({"quota_set": {"instances": -1, "cores": -1, "ram": -1}}).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    urllib.request.urlopen(req).close()
    made = []
    vfs = []
    try:
        # A lab host runs 16 instances: 46 more fit on the OVS and vRouter
        # hosts (the scheduler spreads them), 2 more on VFs of compute-3.
        for i in range(46):
            made.append(cloud.compute.create_server(name=f"paged-{i:02}", networks=[{"uuid": demo.id}]))
        for i in range(2):
            vf = cloud.network.create_port(network_id=demo.id, binding_vnic_type="direct")
            vfs.append(vf)
            made.append(cloud.compute.create_server(
                name=f"paged-vf-{i}", networks=[{"port": vf.id}], availability_zone="nova:compute-3"
            ))
        for s in made:
            cloud.compute.wait_for_server(s, wait=60, interval=0.2)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{lab}/console/#/instances")
        # 3 demo VMs and 48 more: 50 on the first page, 1 on the second.
        expect(page.locator("#instances tbody tr")).to_have_count(50)
        expect(page.locator(".pager span")).to_have_text("instances 1–50")
        page.click("text=Next")
        expect(page.locator("#instances tbody tr")).to_have_count(1)
        expect(page.locator(".pager span")).to_have_text("instances 51–51")
        page.click("text=Previous")
        expect(page.locator("#instances tbody tr")).to_have_count(50)
        page.close()
    finally:
        for s in made:
            cloud.compute.delete_server(s)
        for s in made:
            cloud.compute.wait_for_delete(s, wait=60, interval=0.2)
        for vf in vfs:
            cloud.network.delete_port(vf, ignore_missing=True)
        req = urllib.request.Request(
            f"{lab}/compute/v2.1/os-quota-sets/{project}",
            data=json.dumps({"quota_set": {"instances": 10, "cores": 20, "ram": 51200}}).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        urllib.request.urlopen(req).close()
