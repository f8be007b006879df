"""Drive the real ``flwr run`` CLI on a private local SuperLink, and clean up after it.

Used by the sweep command, the benchmark and the end-to-end test.  Each launch gets its own FLWR_HOME
and its own local-SuperLink ports, so it never reuses a SuperLink left by someone else (which would
keep that one's environment and working directory), and every Flower process it started is stopped by
pid when it returns, also on failure or timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

APP_DIR = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_run_config(path: Path, run_config: Mapping[str, Any]) -> Path:
    path.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in run_config.items()))
    return path


def processes_with(marker: str) -> list[psutil.Process]:
    """Running processes whose command line contains ``marker``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or ()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def stop_processes(processes: list[psutil.Process], grace: float = 5.0) -> None:
    """SIGTERM every process and its descendants, SIGKILL whatever is left after ``grace`` seconds."""
    everything: dict[int, psutil.Process] = {}
    for p in processes:
        try:
            for q in (p, *p.children(recursive=True)):
                everything[q.pid] = q
        except psutil.NoSuchProcess:
            continue
    for p in everything.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(everything.values()), timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@dataclass
class FlwrRun:
    returncode: int
    output: str
    seconds: float
    flwr_home: Path


def flwr_run(
    run_config: Mapping[str, Any],
    federation_config: Mapping[str, Any] | None = None,
    app_dir: str | Path = APP_DIR,
    timeout: float = 1800.0,
    flwr_home: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    stream_to: Any = None,
    stop_when: Callable[[], bool] | None = None,
) -> FlwrRun:
    """``flwr run <app_dir> --stream`` on a private local SuperLink (simulation), then stop it.

    ``stop_when`` is polled after every output line; when it returns True every process of the run
    is killed (how the resume test plays a crash).
    """
    home = Path(flwr_home) if flwr_home else Path(tempfile.mkdtemp(prefix="uml-fed-flwr-"))
    home.mkdir(parents=True, exist_ok=True)
    http_port, control_port = free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent)  # flwr starts flower-superlink etc. by name
    full_env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        **(env or {}),
    }
    rc_file = write_run_config(home / "run_config.toml", run_config)
    flwr = Path(bin_dir) / "flwr"
    cmd = [str(flwr) if flwr.exists() else "flwr", "run", str(app_dir), "--stream", "--run-config", str(rc_file)]
    if federation_config:
        cmd += ["--federation-config", " ".join(f"{k}={_toml_value(v)}" for k, v in federation_config.items())]
    marker = f"--port {http_port}"
    tic = time.perf_counter()
    lines: list[str] = []
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            lines.append(line)
            if stream_to is not None:
                stream_to.write(line)
                stream_to.flush()
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"uml-fed: flwr run killed after {timeout:.0f} s\n")
                break
            if stop_when is not None and stop_when():
                stop_processes([*processes_with(marker), psutil.Process(proc.pid)], grace=0.0)
                lines.append("uml-fed: run stopped by stop_when\n")
                break
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_processes(processes_with(marker))
    return FlwrRun(rc, "".join(lines), time.perf_counter() - tic, home)
