"""openstacksdk with password authentication against switchyard's embedded
identity (`[identity] auth_strategy = "embedded"`): keystoneauth discovers
the identity endpoint, takes a project-scoped token, finds the network
endpoint in the catalog, and the calls run as that project."""

import os
import time
import urllib.request

import keystoneauth1.exceptions as ksa
import openstack
import openstack.exceptions as exc
import pytest

from conftest import spawn


@pytest.fixture(scope="module")
def keystone_server():
    cfg_dir = os.environ.get("TMPDIR", "/tmp")
    cfg = os.path.join(cfg_dir, f"switchyard-identity-{os.getpid()}.toml")
    with open(cfg, "w") as f:
        f.write('[identity]\nauth_strategy = "embedded"\nadmin_password = "adm1n-pw"\n'
                'demo_password = "dem0-pw"\n')
    with spawn(["server", "--bind", "127.0.0.1:{port}", "--data-dir", "{data_dir}",
                "--config", cfg], "switchyard-identity-") as run:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(run.base + "/", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        yield run
    os.unlink(cfg)


def connect(run, user, password, project):
    return openstack.connect(
        auth_url=f"{run.base}/identity/v3",
        username=user, password=password, project_name=project,
        user_domain_name="Default", project_domain_name="Default",
        region_name="RegionOne",
    )


def test_password_auth_catalog_and_project_isolation(keystone_server):
    admin = connect(keystone_server, "admin", "adm1n-pw", "admin")
    demo = connect(keystone_server, "demo", "dem0-pw", "demo")
    assert admin.current_project.name == "admin"
    n = admin.network.create_network(name="sdk-admin-net")
    try:
        assert n.project_id == admin.current_project_id
        assert "sdk-admin-net" not in {x.name for x in demo.network.networks()}
        d = demo.network.create_network(name="sdk-demo-net")
        assert d.project_id == demo.current_project_id
        assert {"sdk-admin-net", "sdk-demo-net"} <= {x.name for x in admin.network.networks()}
        with pytest.raises(exc.NotFoundException):
            demo.network.delete_network(n.id, ignore_missing=False)
        demo.network.delete_network(d)
    finally:
        admin.network.delete_network(n)
    # Identity calls through the SDK.
    assert {p.name for p in admin.identity.projects()} == {"admin", "demo"}
    with pytest.raises(exc.ForbiddenException):
        list(demo.identity.projects())


def test_bad_password_is_refused(keystone_server):
    bad = connect(keystone_server, "admin", "wrong", "admin")
    with pytest.raises(ksa.http.Unauthorized):
        list(bad.network.networks())
