"""Fixtures for the openstacksdk compatibility suite.

One real `switchyard server` process (the release binary, from SWITCHYARD_BIN)
is started per test session on a free loopback port with a throw-away data
directory, and stopped with SIGTERM at the end.

How openstacksdk is pointed at it: no clouds.yaml, no Keystone. We build the
connection directly with

    openstack.connection.Connection(
        auth_type="none",
        network_endpoint_override="http://127.0.0.1:PORT/v2.0/",
    )

which is the documented form (README, docs/api.md). `auth_type="none"` makes
keystoneauth use its noauth plugin (no token, no catalog). openstacksdk 4.22 /
keystoneauth1 5.18 run version discovery on the override URL itself, so
GET /v2.0/ carries a `version` document beside Neutron's `resources`; the
unversioned root (GET / answers the `versions` list) works too and has its own
test.

Under noauth switchyard treats a request without X-Roles as admin in the
default project ("admin"), so provider attributes can be set.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import openstack
import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def pytest_configure(config):
    # openstacksdk's own deprecation notices (influxdb, _compute_attributes,
    # service_type, find_* ignore_missing) are about the SDK, not about us.
    for mod in ("openstack", "keystoneauth1"):
        config.addinivalue_line(
            "filterwarnings", f"ignore::DeprecationWarning:{mod}(\\..*)?"
        )
        config.addinivalue_line("filterwarnings", f"ignore::PendingDeprecationWarning:{mod}(\\..*)?")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary() -> str:
    b = os.environ.get("SWITCHYARD_BIN") or str(REPO / "target" / "release" / "switchyard")
    if not os.access(b, os.X_OK):
        pytest.exit(
            f"switchyard binary not found at {b}: run "
            "`cargo build --release -p switchyard` or set SWITCHYARD_BIN",
            returncode=2,
        )
    return b


class Server:
    """A running switchyard process."""

    def __init__(self, proc: subprocess.Popen, base: str, data_dir: str, log_path: Path):
        self.proc = proc
        self.base = base  # http://127.0.0.1:PORT
        self.data_dir = data_dir
        self.log_path = log_path

    @property
    def endpoint(self) -> str:
        """The endpoint given to openstacksdk (see module docstring)."""
        return f"{self.base}/v2.0/"

    ROLES = {
        "Open vSwitch agent": "ovs",
        "vRouter agent": "vrouter",
        "NIC Switch agent": "sriov",
        "Gateway agent": "gateway",
    }

    def token(self, host: str, role: str) -> str:
        """The node credential of `host`, enrolled with `switchyard node enroll`
        in the server's data directory (which the server re-reads) on first use."""
        tokens = self.__dict__.setdefault("_tokens", {})
        if (host, role) not in tokens:
            out = subprocess.run(
                [_binary(), "node", "enroll", host, "--role", role, "--data-dir", self.data_dir],
                check=True, capture_output=True, text=True,
            )
            tokens[(host, role)] = out.stdout.strip()
        return tokens[(host, role)]

    def report(self, agent: dict):
        """An agent's report through the internal API, with its node credential."""
        token = self.token(agent["host"], self.ROLES[agent["agent_type"]])
        return self.internal("POST", "agents/report", {"agent": agent}, token=token)

    def internal(self, method: str, path: str, body=None, token: str | None = None):
        """Calls the internal /switchyard/v1 API (not part of Neutron; plain urllib)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            f"{self.base}/switchyard/v1/{path.lstrip('/')}",
            data=data,
            method=method,
            headers=headers,
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"switchyard exited with {proc.returncode} during start-up:\n"
                + log_path.read_text(errors="replace")
            )
        try:
            with urllib.request.urlopen(base + "/", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"switchyard did not answer GET / within {STARTUP_TIMEOUT}s: {last}")


class Running:
    """A switchyard process started by `spawn`: its stdout lines as they come."""

    def __init__(self, proc: subprocess.Popen, port: int, data_dir: str, log_path: Path):
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.log_path = log_path
        self.lines: list[str] = []


@contextlib.contextmanager
def spawn(args, prefix: str):
    """Runs `switchyard ARGS` (with {port} and {data_dir} filled in) on a free
    loopback port and a throw-away directory, drains its stdout, and stops it
    with SIGTERM at the end, asserting a clean exit."""
    port = _free_port()
    data_dir = tempfile.mkdtemp(prefix=prefix)
    log_path = Path(data_dir) / "switchyard.log"
    log = open(log_path, "wb")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    proc = subprocess.Popen(
        [_binary()] + [a.format(port=port, data_dir=data_dir) for a in args],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    run = Running(proc, port, data_dir, log_path)

    # Keep draining stdout so the pipe never fills.
    def drain():
        for line in proc.stdout:
            run.lines.append(line.decode(errors="replace").rstrip())

    threading.Thread(target=drain, daemon=True).start()
    try:
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        rc = proc.returncode
        shutil.rmtree(data_dir, ignore_errors=True)
        # A graceful stop on SIGTERM exits 0; anything else is a bug.
        assert rc == 0, f"switchyard did not stop cleanly on SIGTERM (exit {rc})"


@pytest.fixture(scope="session")
def server():
    with spawn(["server", "--bind", "127.0.0.1:{port}", "--data-dir", "{data_dir}"], "switchyard-compat-") as run:
        _wait_ready(run.proc, run.base, run.log_path)
        # The banner is printed before the listener serves, so it is there by now.
        for _ in range(50):
            if run.lines:
                break
            time.sleep(0.05)
        assert run.lines and run.lines[0].startswith(
            f"switchyard: Neutron API on http://127.0.0.1:{run.port}/v2.0/"
        ), f"unexpected start-up banner: {run.lines!r}"
        yield Server(run.proc, run.base, run.data_dir, run.log_path)


@pytest.fixture(scope="session")
def conn(server):
    c = openstack.connection.Connection(
        auth_type="none",
        network_endpoint_override=server.endpoint,
    )
    yield c
    c.close()


@pytest.fixture(scope="session")
def agents(server):
    """Registers the lab's agents once: OVS on compute-1, vRouter on compute-2,
    SR-IOV NIC switch on compute-3."""
    reports = [
        {
            "host": "compute-1",
            "agent_type": "Open vSwitch agent",
            "configurations": {"bridge_mappings": {"physnet1": "br-phys"}},
        },
        {
            "host": "compute-2",
            "agent_type": "vRouter agent",
            "configurations": {"tunneling_ip": "192.0.2.12"},
        },
        {
            "host": "compute-3",
            "agent_type": "NIC Switch agent",
            "configurations": {"device_mappings": {"physnet1": ["eth1"]}},
        },
    ]
    out = []
    for r in reports:
        status, body = server.report(r)
        assert status in (200, 201), (status, body)
        out.append(body)
    return out


@pytest.fixture
def uniq():
    """A short unique suffix for names, so tests never collide."""
    return uuid.uuid4().hex[:8]


def _cleanup_network(conn, net_id):
    for p in list(conn.network.ports(network_id=net_id)):
        conn.network.delete_port(p, ignore_missing=True)
    conn.network.delete_network(net_id, ignore_missing=True)


@pytest.fixture
def net_factory(conn, uniq):
    made = []

    def make(**kw):
        kw.setdefault("name", f"compat-{uniq}-{len(made)}")
        n = conn.network.create_network(**kw)
        made.append(n.id)
        return n

    yield make
    for nid in reversed(made):
        _cleanup_network(conn, nid)


@contextlib.contextmanager
def noauth_lab(prefix: str, startup: float = 60.0):
    """`switchyard lab up --auth noauth`, once its agents are connected and in sync."""
    with spawn(
        ["lab", "up", "--auth", "noauth", "--bind", "127.0.0.1:{port}", "--db", "sqlite://{data_dir}/lab.db"],
        prefix,
    ) as run:
        deadline = time.monotonic() + startup
        while not any(l.startswith("  agents") for l in run.lines):
            assert run.proc.poll() is None, run.log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, f"lab did not come up: {run.lines}"
            time.sleep(0.1)
        assert any("connected and in sync" in l for l in run.lines), run.lines
        yield run


@contextlib.contextmanager
def noauth_cloud(base: str):
    """openstacksdk on a noauth lab's network and compute endpoints."""
    c = openstack.connection.Connection(
        auth_type="none",
        network_endpoint_override=f"{base}/v2.0/",
        compute_endpoint_override=f"{base}/compute/v2.1/",
    )
    try:
        yield c
    finally:
        c.close()


@contextlib.contextmanager
def auth_lab(clouds_path, prefix: str, startup: float = 60.0):
    """`switchyard lab up --auth embedded --clouds-yaml CLOUDS_PATH`, once
    it has written the file."""
    with spawn(
        ["lab", "up", "--bind", "127.0.0.1:{port}", "--db", "sqlite://{data_dir}/lab.db",
         "--auth", "embedded", "--clouds-yaml", str(clouds_path)],
        prefix,
    ) as run:
        deadline = time.monotonic() + startup
        while not any("clouds.yaml" in l and "written to" in l for l in run.lines):
            assert run.proc.poll() is None, run.log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, f"lab did not come up: {run.lines}"
            time.sleep(0.1)
        yield run
