"""`switchyard server` behind a real OpenStack Keystone (keystone 30 from
PyPI, on SQLite, in its own venv made by scripts/compat.sh):
`[identity] auth_strategy = "keystone"` validates every token with
Keystone's `GET /v3/auth/tokens` as keystonemiddleware does.

Keystone's catalog lists switchyard as the network service, so openstacksdk
and the `openstack` CLI find it the way they find Neutron: password auth at
Keystone, then the catalog. Projects and roles come from Keystone's answer.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import openstack
import openstack.exceptions as exc
import pytest

from conftest import _free_port, spawn

ADMIN_PW = "k3ystone-admin"


def _venv() -> Path:
    v = os.environ.get("SWITCHYARD_KEYSTONE_VENV")
    if not v or not (Path(v) / "bin" / "keystone-manage").exists():
        pytest.fail("no Keystone venv: run the suite through scripts/compat.sh "
                    "(it sets SWITCHYARD_KEYSTONE_VENV)")
    return Path(v)


def _call(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, r.headers, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return e.code, e.headers, parsed


def _password_token(kurl, user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    st, h, v = _call("POST", f"{kurl}/v3/auth/tokens", body)
    assert st == 201, (st, v)
    return h["X-Subject-Token"]


@pytest.fixture(scope="module")
def keystone():
    """A real Keystone on a free port: bootstrapped (admin), with a service
    project and the users switchyard and its tests need."""
    venv = _venv()
    work = Path(tempfile.mkdtemp(prefix="switchyard-keystone-"))
    port = _free_port()
    kurl = f"http://127.0.0.1:{port}"
    conf = work / "keystone.conf"
    conf.write_text(
        f"[DEFAULT]\nlog_file = {work}/keystone.log\n"
        f"[database]\nconnection = sqlite:///{work}/keystone.db\n"
        "[token]\nprovider = fernet\n"
        f"[fernet_tokens]\nkey_repository = {work}/fernet-keys\n"
        f"[fernet_receipts]\nkey_repository = {work}/fernet-keys\n"
        f"[credential]\nkey_repository = {work}/credential-keys\n"
        # Fewer bcrypt rounds: password checks in ms, not a third of a second.
        "[identity]\npassword_hash_rounds = 4\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
    for args in (["db_sync"],
                 ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["bootstrap", "--bootstrap-password", ADMIN_PW,
                  "--bootstrap-admin-url", f"{kurl}/v3", "--bootstrap-public-url", f"{kurl}/v3",
                  "--bootstrap-internal-url", f"{kurl}/v3", "--bootstrap-region-id", "RegionOne"]):
        r = subprocess.run(manage + args, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    proc = subprocess.Popen(
        [str(venv / "bin" / "python"), str(Path(__file__).parent / "keystone" / "serve.py"),
         str(port), str(conf)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (work / "serve.log").read_text(errors="replace")
            try:
                admin = _password_token(kurl, "admin", ADMIN_PW, "admin")
                break
            except (urllib.error.URLError, ConnectionError, OSError, AssertionError):
                assert time.monotonic() < deadline, "Keystone did not start"
                time.sleep(0.2)
        ids = {}

        def make(kind, body):
            st, _, v = _call("POST", f"{kurl}/v3/{kind}s", {kind: body}, admin)
            assert st == 201, (kind, st, v)
            return v[kind]["id"]

        st, _, roles = _call("GET", f"{kurl}/v3/roles", token=admin)
        role = {r["name"]: r["id"] for r in roles["roles"]}
        for p in ("service", "demo", "other"):
            ids[p] = make("project", {"name": p, "domain_id": "default"})
        for user, pw, project, r in (("neutron", "n3utron", "service", "service"),
                                     ("demo", "d3mo", "demo", "member"),
                                     ("alice", "al1ce", "other", "member"),
                                     ("rita", "r1ta", "demo", "reader")):
            uid = make("user", {"name": user, "password": pw, "domain_id": "default"})
            st, _, v = _call(
                "PUT", f"{kurl}/v3/projects/{ids[project]}/users/{uid}/roles/{role[r]}",
                token=admin)
            assert st == 204, (st, v)
        yield {"url": kurl, "admin": admin, "projects": ids, "work": work}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def behind_keystone(keystone):
    """switchyard server validating at that Keystone, registered in its
    catalog as the network service."""
    cfg = keystone["work"] / "switchyard.toml"
    cfg.write_text(
        '[identity]\nauth_strategy = "keystone"\n\n[keystone_authtoken]\n'
        f'auth_url = "{keystone["url"]}/v3"\nusername = "neutron"\npassword = "n3utron"\n'
        'project_name = "service"\n')
    with spawn(["server", "--bind", "127.0.0.1:{port}", "--data-dir", "{data_dir}",
                "--config", str(cfg)], "switchyard-behind-keystone-") as run:
        deadline = time.monotonic() + 20
        while not any("Neutron API" in l for l in run.lines):
            assert run.proc.poll() is None, run.log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, run.lines
            time.sleep(0.05)
        kurl, admin = keystone["url"], keystone["admin"]
        st, _, v = _call("POST", f"{kurl}/v3/services",
                         {"service": {"type": "network", "name": "neutron"}}, admin)
        assert st == 201, v
        for iface in ("public", "internal", "admin"):
            st, _, e = _call("POST", f"{kurl}/v3/endpoints", {"endpoint": {
                "service_id": v["service"]["id"], "interface": iface,
                "url": run.base, "region_id": "RegionOne"}}, admin)
            assert st == 201, e
        yield run


def connect(keystone, user, password, project):
    return openstack.connect(
        auth_url=f"{keystone['url']}/v3", username=user, password=password,
        project_name=project, user_domain_name="Default", project_domain_name="Default",
        region_name="RegionOne")


def test_tokens_are_checked_at_keystone(keystone, behind_keystone):
    b = behind_keystone.base
    for token in (None, "gAAAAABnot-a-fernet-token"):
        st, h, v = _call("GET", f"{b}/v2.0/networks", token=token)
        assert st == 401, (st, v)
        assert v["error"]["code"] == 401
        assert h["WWW-Authenticate"] == f'Keystone uri="{keystone["url"]}/v3"'
    # A Keystone token of the admin project: served, as admin.
    st, _, v = _call("GET", f"{b}/v2.0/networks", token=keystone["admin"])
    assert st == 200, v


def test_sdk_through_keystones_catalog_and_project_isolation(keystone, behind_keystone):
    demo = connect(keystone, "demo", "d3mo", "demo")
    alice = connect(keystone, "alice", "al1ce", "other")
    rita = connect(keystone, "rita", "r1ta", "demo")
    admin = connect(keystone, "admin", ADMIN_PW, "admin")
    # openstacksdk found the network endpoint in Keystone's catalog.
    assert demo.network.get_endpoint().rstrip("/").startswith(behind_keystone.base)
    n = demo.network.create_network(name="ks-demo-net")
    try:
        assert n.project_id == keystone["projects"]["demo"]
        assert "ks-demo-net" not in {x.name for x in alice.network.networks()}
        with pytest.raises(exc.NotFoundException):
            alice.network.delete_network(n.id, ignore_missing=False)
        # The reader reads and changes nothing.
        assert "ks-demo-net" in {x.name for x in rita.network.networks()}
        with pytest.raises(exc.ForbiddenException):
            rita.network.update_network(n, name="renamed")
        assert "ks-demo-net" in {x.name for x in admin.network.networks()}
    finally:
        demo.network.delete_network(n, ignore_missing=True)


def test_the_openstack_cli_through_keystone(keystone, behind_keystone, tmp_path):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  ks-demo:\n    auth:\n"
        f"      auth_url: {keystone['url']}/v3\n      username: demo\n      password: d3mo\n"
        "      project_name: demo\n      user_domain_name: Default\n"
        "      project_domain_name: Default\n    region_name: RegionOne\n")
    osc = Path(sys.executable).parent / "openstack"
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds), OS_CLOUD="ks-demo")

    def run(*args):
        r = subprocess.run([str(osc), *args, "-f", "json"], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        return json.loads(r.stdout)

    made = run("network", "create", "ks-cli-net")
    assert made["project_id"] == keystone["projects"]["demo"]
    assert "ks-cli-net" in {n["Name"] for n in run("network", "list")}
    subprocess.run([str(osc), "network", "delete", "ks-cli-net"], env=env, check=True,
                   capture_output=True, timeout=120)
