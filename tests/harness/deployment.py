"""A real Flower deployment on one machine: one SuperLink and one SuperNode per institution.

Every component is a separate process, as on separate machines: the SuperLink (TLS with a local CA,
SuperNode authentication on, listening on 127.0.0.1 only), the Fleet proxy in front of it
(``deploy/start-fleet-proxy.sh``: nginx passing only the SuperNodes' Fleet API calls), one SuperNode
per institution (its own auth key, FLWR_HOME and output directory, connected through the proxy), and
the run is submitted with the real ``flwr run`` CLI through a SuperLink connection in a private
``$FLWR_HOME/config.toml``.  Credentials come from ``deploy/make-certs.sh``, so the tests exercise the
same scripts an operator runs.  :class:`Outsider` is another host: a network namespace whose only way
to this machine is a veth link, as an institution's machine has.  Used by ``tests/test_deployment.py`` and
``scripts/bench_deployment.py`` (a test and measurement tool, not part of the package); ``deploy/*.sh``
do the same steps by hand.

Every process is started in its own session and stopped by session (so the ``flwr-serverapp`` /
``flwr-clientapp`` children go too), on ``stop()``, at the end of the ``with`` block, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from uml_fed.experiments.launch import APP_DIR, free_port, write_run_config
from uml_fed.federated.runtime import stop_processes

DEPLOY_DIR = APP_DIR / "deploy"
CONNECTION = "uml-fed"  # the SuperLink connection name in $FLWR_HOME/config.toml (deploy/run.sh uses it too)
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # the SuperLink would otherwise `uv sync` the app's dependencies (torch!) into a new env per run
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    # how often a SuperExec looks for a new ServerApp/ClientApp task (Flower's default: 1 s, per message)
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}


class DeploymentError(RuntimeError):
    """A component did not start, or a CLI call failed; the message names it and its log file."""


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def in_sessions(sessions: Iterable[int]) -> list[psutil.Process]:
    """Live (non-zombie) processes in any of ``sessions``."""
    wanted, out = set(sessions), []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(p.pid) in wanted:
                out.append(p)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    return out


@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log: Path
    offset: int = 0  # where this process's output starts in ``log`` (a restarted node appends)

    @property
    def session(self) -> int:
        return self.proc.pid  # start_new_session=True: the leader's pid is the session id

    def log_text(self) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace")


class Outsider:
    """A second host: a network namespace joined to this one by a veth pair (``ip netns``, root only).

    From it, this machine is ``host_ip``: the Fleet proxy listens there (0.0.0.0), the SuperLink does
    not (127.0.0.1 only), as for an institution's machine on the network.
    """

    def __init__(self, tag: str) -> None:
        self.ns = f"umlf-{tag}"
        self.host_if, self.peer_if = f"umlh{tag}"[:15], f"umlo{tag}"[:15]
        subnet = 16 + int(tag, 16) % 200
        self.host_ip, self.ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"

    @staticmethod
    def unavailable() -> str | None:
        """Why no namespace can be made here (None: it can)."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
        return None if probe.returncode == 0 else f"ip netns does not work here: {probe.stderr.strip()}"

    def create(self) -> None:
        for cmd in (
            f"ip netns add {self.ns}",
            f"ip link add {self.host_if} type veth peer name {self.peer_if}",
            f"ip link set {self.peer_if} netns {self.ns}",
            f"ip addr add {self.host_ip}/30 dev {self.host_if}",
            f"ip link set {self.host_if} up",
            f"ip netns exec {self.ns} ip addr add {self.ip}/30 dev {self.peer_if}",
            f"ip netns exec {self.ns} ip link set {self.peer_if} up",
            f"ip netns exec {self.ns} ip link set lo up",
        ):
            res = subprocess.run(cmd.split(), capture_output=True, text=True, check=False)
            if res.returncode != 0:
                self.remove()
                raise DeploymentError(f"{cmd}: {res.stderr.strip()}")

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)  # its veth end too
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]


@dataclass
class DeployedRun:
    returncode: int
    output: str
    seconds: float
    run_id: int | None


@dataclass
class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 in ``workdir`` (certs/, logs/, homes/, nodes/).

    ``tls`` / ``auth`` default to on (and with them the Fleet proxy the SuperNodes connect through);
    ``insecure`` deployments are for quick local checks only.  ``database``: keep the SuperLink state
    in ``workdir/superlink.db`` (needed for :meth:`captured_replies`).  ``data_paths``: node-config
    ``data-path`` per institution (real data).  ``outsider``: also make an :class:`Outsider` host
    (its address is in the certificate); ``remote``: institutions whose SuperNode runs there.
    """

    workdir: Path
    institutions: tuple[str, ...] = ("s1", "s2")
    tls: bool = True
    auth: bool = True
    database: bool = False
    capture_replies: bool = False
    data_paths: Mapping[str, str] = field(default_factory=dict)
    outsider: bool = False
    remote: tuple[str, ...] = ()
    app_dir: Path = APP_DIR
    start_timeout: float = 60.0
    components: dict[str, Component] = field(default_factory=dict, init=False)
    sessions: list[int] = field(default_factory=list, init=False)  # one per process started

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.certs = self.workdir / "certs"
        self.logs = self.workdir / "logs"
        self.home = self.workdir / "homes" / "superlink"  # FLWR_HOME of the SuperLink and the CLI
        self.db = self.workdir / "superlink.db"
        self.port = 0
        self.fleet_port = 0
        self.proxy = self.tls and self.auth
        self.host = Outsider(f"{os.getpid() % 4096:03x}{int(time.time() * 1000) % 16:x}") if self.outsider else None
        if self.capture_replies:
            self.database = True

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not (self.tls and self.auth):
            warnings.warn(
                "LocalDeployment without TLS or SuperNode authentication: for quick local runs only", stacklevel=2
            )
        for d in (self.logs, self.home):
            d.mkdir(parents=True, exist_ok=True)
        if self.host is not None:
            self.host.create()
        if self.tls or self.auth:
            self.make_credentials(self.institutions)
        self.start_superlink()
        if self.proxy:
            self.start_proxy()
        self.write_connection()
        for name in self.institutions:
            if self.auth:
                self.register(name)
            self.start_supernode(name)
        for name in self.institutions:
            self.wait_connected(name)

    def stop(self) -> None:
        """Stop every process this deployment started (and their children), by session."""
        stop_processes(in_sessions(self.sessions), grace=3.0)
        for c in self.components.values():
            try:
                c.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        left = in_sessions(self.sessions)
        if left:  # a child that escaped its parent's tree: same session, so still ours
            stop_processes(left, grace=0.0)
        if self.host is not None:
            self.host.remove()

    def alive(self) -> list[int]:
        """Processes of this deployment still running (empty after ``stop()``)."""
        return [p.pid for p in in_sessions(self.sessions)]

    # ---------------------------------------------------------------- pieces
    def env(self, home: Path) -> dict[str, str]:
        # Flower starts flower-superexec / flwr-serverapp / flwr-clientapp by name: this venv first
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home), "PATH": path}

    def make_credentials(self, names: Iterable[str]) -> None:
        """``deploy/make-certs.sh`` (keeps files that exist; adds key pairs for new names)."""
        hosts = ["--host", self.host.host_ip] if self.host is not None else []
        cmd = ["bash", str(DEPLOY_DIR / "make-certs.sh"), "--out", str(self.certs), *hosts, *names]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise DeploymentError(f"make-certs.sh failed: {res.stderr or res.stdout}")

    def _spawn(
        self, name: str, cmd: list[str], home: Path, cwd: Path, env: Mapping[str, str] | None = None
    ) -> Component:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            offset = fh.tell()
            proc = subprocess.Popen(
                cmd,
                env={**self.env(home), **(env or {})},
                cwd=cwd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        comp = Component(name, proc, log, offset)
        self.components[name] = comp
        self.sessions.append(proc.pid)
        return comp

    def _wait_for(self, comp: Component, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, comp.log_text())
            if m:
                return m
            if comp.proc.poll() is not None:
                raise DeploymentError(
                    f"{comp.name} exited with {comp.proc.returncode}; see {comp.log}:\n{comp.log_text()[-2000:]}"
                )
            time.sleep(0.2)
        raise DeploymentError(f"{comp.name}: no {pattern!r} within {timeout:.0f} s; see {comp.log}")

    def superlink_command(self) -> list[str]:
        cmd = [
            _bin("flower-superlink"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-runtime-dependency-installation",
        ]
        if self.tls:
            cmd += [
                "--ssl-ca-certfile",
                str(self.certs / "ca.crt"),
                "--ssl-certfile",
                str(self.certs / "server.pem"),
                "--ssl-keyfile",
                str(self.certs / "server.key"),
            ]
        else:
            cmd += ["--insecure"]
        if self.auth:
            cmd += ["--enable-supernode-auth"]
        if self.database:
            cmd += ["--database", str(self.db)]
        return cmd

    def start_superlink(self, port: int | None = None) -> None:
        """The SuperLink on ``port`` (default: a free one)."""
        self.port = port or free_port()
        # cwd: the ServerApp runs where the SuperLink started (relative paths would land here)
        comp = self._spawn("superlink", self.superlink_command(), self.home, self.workdir)
        self._wait_for(comp, r"Uvicorn running on", self.start_timeout)
        if self.capture_replies:
            install_reply_capture(self.db)

    def start_proxy(self) -> None:
        """``deploy/start-fleet-proxy.sh`` on 0.0.0.0 (a free port) in front of the SuperLink."""
        if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
            raise DeploymentError(
                "nginx not found: the Fleet proxy needs it (bash scripts/setup.sh installs nginx-light)"
            )
        self.fleet_port = free_port()
        env = {"UML_FED_CERTS": str(self.certs), "UML_FED_STATE": str(self.workdir / "state")}
        cmd = ["bash", str(DEPLOY_DIR / "start-fleet-proxy.sh"), "--listen", f"0.0.0.0:{self.fleet_port}"]
        comp = self._spawn("proxy", [*cmd, "--superlink", f"127.0.0.1:{self.port}"], self.home, self.workdir, env)
        self._wait_for(comp, r"fleet proxy on", self.start_timeout)
        deadline = time.monotonic() + self.start_timeout
        while not _listening(self.fleet_port):
            if comp.proc.poll() is not None or time.monotonic() > deadline:
                raise DeploymentError(
                    f"proxy did not listen on {self.fleet_port}; see {comp.log}:\n{comp.log_text()[-2000:]}"
                )
            time.sleep(0.1)

    def write_connection(self) -> Path:
        """The SuperLink connection ``flwr`` uses (Flower 1.42 ``$FLWR_HOME/config.toml``)."""
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "127.0.0.1:{self.port}"',
        ]
        lines.append(f'root-certificates = "{self.certs / "ca.crt"}"' if self.tls else "insecure = true")
        path = self.home / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """A ``flwr`` CLI call against this deployment's SuperLink."""
        return subprocess.run(
            [_bin("flwr"), *args],
            check=False,
            env=self.env(self.home),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def register(self, name: str) -> int:
        """``flwr supernode register`` the public key of ``name``; returns its node id."""
        res = self.flwr(
            "supernode",
            "register",
            str(self.certs / f"supernode-{name}.pub"),
            CONNECTION,
            "--name",
            name,
            "--format",
            "json",
        )
        try:
            return int(json.loads(res.stdout[res.stdout.index("{") :])["node-id"])
        except (ValueError, KeyError) as err:
            raise DeploymentError(f"registering {name} failed: {res.stdout}{res.stderr}") from err

    def fleet_address(self, remote: bool) -> str:
        """Where a SuperNode reaches the SuperLink: the Fleet proxy (from the outsider host: across the
        veth link), or the SuperLink itself when there is no proxy (insecure runs)."""
        host = self.host.host_ip if remote and self.host is not None else "127.0.0.1"
        return f"{host}:{self.fleet_port}" if self.proxy else f"{host}:{self.port}"

    def supernode_command(self, name: str, institution: str, key: str | None = None, remote: bool = False) -> list[str]:
        node_config = f'institution="{institution}" output-dir="{self.workdir / "nodes" / name}"'
        if self.data_paths.get(institution):
            node_config += f' data-path="{self.data_paths[institution]}"'
        cmd = [
            _bin("flower-supernode"),
            "--superlink",
            self.fleet_address(remote),
            "--port",
            str(free_port()),
            "--node-config",
            node_config,
        ]
        cmd += ["--root-certificates", str(self.certs / "ca.crt")] if self.tls else ["--insecure"]
        if self.auth:
            cmd += ["--auth-supernode-private-key", str(self.certs / f"supernode-{key or name}")]
        return self.host.wrap(cmd) if remote and self.host is not None else cmd

    def start_supernode(
        self, name: str, institution: str | None = None, key: str | None = None, remote: bool | None = None
    ) -> Component:
        """SuperNode ``name`` serving ``institution`` (default: ``name``) with key ``key``, on this host or
        (``remote``; default: ``name`` in ``self.remote``) on the outsider host."""
        home = self.workdir / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        self.components.pop(name, None)
        remote = name in self.remote if remote is None else remote
        return self._spawn(name, self.supernode_command(name, institution or name, key, remote), home, home)

    def outsider_flwr(self, address: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """A ``flwr`` call from the outsider host, holding only ``ca.crt``, against ``address``."""
        assert self.host is not None, "LocalDeployment(outsider=True)"
        home = self.workdir / "homes" / "outsider"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "target"\n\n[superlink.target]\naddress = "{address}"\n'
            f'root-certificates = "{self.certs / "ca.crt"}"\n'
        )
        return subprocess.run(
            self.host.wrap([_bin("flwr"), *args]),
            check=False,
            env=self.env(home),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def wait_connected(self, name: str, timeout: float | None = None) -> int:
        """Node id of SuperNode ``name`` once the SuperLink has accepted it."""
        m = self._wait_for(self.components[name], r"SuperNode ID: (\d+)", timeout or self.start_timeout)
        return int(m.group(1))

    def restart(self, name: str, timeout: float = 300.0) -> int:
        """Start SuperNode ``name`` again until the SuperLink accepts it, waiting 2, 4, ... 30 s between
        tries (as ``deploy/start-supernode.sh`` does: the SuperLink refuses a key whose old session it
        still holds); returns its node id."""
        deadline, delay = time.monotonic() + timeout, 2.0
        while True:
            comp = self.start_supernode(name)
            try:
                return self.wait_connected(name, timeout=min(60.0, max(1.0, deadline - time.monotonic())))
            except DeploymentError:
                if comp.proc.poll() is None:
                    stop_processes([psutil.Process(comp.proc.pid)], grace=1.0)
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(30.0, 2 * delay)

    def restart_superlink(self) -> None:
        """Kill the SuperLink and the ServerApp it runs at once (a machine that goes away), then start it
        again on the same port and state database; the SuperNodes reconnect by themselves (Flower's
        default: unlimited retries).  Needs ``database=True``: the registrations live there."""
        if not self.database:
            raise DeploymentError("restart_superlink needs LocalDeployment(database=True)")
        self.kill("superlink")
        self.start_superlink(self.port)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill component ``name`` (a SuperNode, the SuperLink) and its children at once."""
        comp = self.components[name]
        for p in in_sessions([comp.session]):
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        comp.proc.wait(timeout=10)

    def nodes(self) -> list[dict[str, Any]]:
        """``flwr supernode list`` as dicts (node id, status, ...)."""
        res = self.flwr("supernode", "list", CONNECTION, "--format", "json")
        try:
            data = json.loads(res.stdout[res.stdout.index("{") :])
        except ValueError as err:
            raise DeploymentError(f"flwr supernode list failed: {res.stdout}{res.stderr}") from err
        return list(data.get("nodes", []))

    # ---------------------------------------------------------------- the run
    def run(
        self,
        run_config: Mapping[str, Any],
        timeout: float = 600.0,
        on_line: Callable[[str], None] | None = None,
        stream_to: IO[str] | None = None,
    ) -> DeployedRun:
        """``flwr run <app> uml-fed --stream --run-config <file>``; returns when the run ends.

        ``on_line`` sees every streamed line (how a test kills a SuperNode mid-run).
        """
        rc_file = write_run_config(self.workdir / "run_config.toml", run_config)
        cmd = [_bin("flwr"), "run", str(self.app_dir), CONNECTION, "--stream", "--run-config", str(rc_file)]
        tic = time.perf_counter()
        lines: list[str] = []
        proc = subprocess.Popen(
            cmd,
            env=self.env(self.home),
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.sessions.append(proc.pid)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            rc: int | None = None
            for line in proc.stdout:
                lines.append(line)
                if stream_to is not None:
                    stream_to.write(line)
                    stream_to.flush()
                if on_line is not None:
                    on_line(line)
                if time.monotonic() > deadline:
                    lines.append(f"uml-fed: flwr run stopped after {timeout:.0f} s\n")
                    break
            else:
                rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                stop_processes([psutil.Process(proc.pid)], grace=1.0)
        out = "".join(lines)
        m = re.search(r"started run (\d+)", out)
        return DeployedRun(rc if rc is not None else -9, out, time.perf_counter() - tic, int(m.group(1)) if m else None)

    def captured_replies(self) -> list[Any]:
        """Every reply message the SuperLink received, decoded (needs ``capture_replies=True``)."""
        return captured_replies(self.db)


# -------------------------------------------------------------------- what left the institutions
_CAPTURE_SQL = """
CREATE TABLE IF NOT EXISTS uml_capture_reply (message_id VARCHAR PRIMARY KEY, message_type VARCHAR);
CREATE TABLE IF NOT EXISTS uml_capture_object (object_id VARCHAR PRIMARY KEY, content BLOB);
CREATE TRIGGER IF NOT EXISTS uml_capture_reply_trg AFTER INSERT ON message_res BEGIN
  INSERT OR IGNORE INTO uml_capture_reply VALUES (NEW.message_id, NEW.message_type); END;
CREATE TRIGGER IF NOT EXISTS uml_capture_object_trg AFTER UPDATE OF content ON objects
  WHEN length(NEW.content) > 0 BEGIN
  INSERT OR IGNORE INTO uml_capture_object VALUES (NEW.object_id, NEW.content); END;
"""


def install_reply_capture(db: Path) -> None:
    """Copy every reply message and every stored object into side tables of the SuperLink's SQLite state.

    Flower 1.42 stores a reply as a row of ``message_res`` (metadata only) plus content-addressed
    objects (the Message, its RecordDict, every ArrayRecord / Array / MetricRecord ...) that the
    SuperNode pushes, and deletes both once the ServerApp has pulled them.  SQLite triggers, installed
    in the database file after the SuperLink created its schema, keep a copy of exactly those bytes,
    so after the run :func:`captured_replies` can inflate what each SuperNode actually sent.
    """
    with sqlite3.connect(db, timeout=30) as con:
        con.executescript(_CAPTURE_SQL)


def captured_replies(db: Path) -> list[Any]:
    """The reply :class:`flwr.app.Message` objects kept by :func:`install_reply_capture`."""
    from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

    with sqlite3.connect(db, timeout=30) as con:
        objects = dict(con.execute("SELECT object_id, content FROM uml_capture_object"))
        ids = [r[0] for r in con.execute("SELECT message_id FROM uml_capture_reply")]
    return [inflate_object_from_contents(i, objects, keep_object_contents=True) for i in ids]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
