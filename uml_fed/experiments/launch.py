"""Drive the real ``flwr run`` CLI on a private local SuperLink, and clean up after it.

Used by the experiment runner (federated arms), ``uml-fed federated``, the benchmarks and the
end-to-end tests.  Each launch gets its own FLWR_HOME
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

from ..federated.runtime import processes_with, server_config, stop_processes

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
    timeout: float | None = 1800.0,
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
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        for line in proc.stdout:
            lines.append(line)
            if stream_to is not None:
                stream_to.write(line)
                stream_to.flush()
            if time.monotonic() > deadline:
                proc.kill()
                lines.append(f"uml-fed: flwr run killed after {timeout} s\n")
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


class FederatedRunFailed(RuntimeError):
    """A federated run ended without ``status: finished``; the message is the run's one-line reason."""


def run_federated_job(
    run_config: dict[str, Any], federation_config: dict[str, Any] | None = None, stream_to: Any = None
) -> dict[str, Any]:
    """``uml-fed federated``: ``flwr run`` (Ray simulation on a private local SuperLink, stopped after)
    of the run config, with one SuperNode per institution and the config's client resources unless
    ``federation_config`` says otherwise; returns ``results.json`` of a finished run and raises
    :class:`FederatedRunFailed` (the run's one-line reason) for any other ending.

    The run config is composed here first, so a config error is one line before Flower starts; the
    run's output directory is fixed here (``output-dir``, or the default one), so its results are found.
    """

    cfg, institutions = server_config(run_config)  # what the ServerApp will check, checked here first
    out = Path(cfg.output_dir)
    federation = {
        "num-supernodes": len(institutions),
        "client-resources-num-cpus": cfg.fed.client_cpus,
        "client-resources-num-gpus": cfg.fed.client_gpus,
        **(federation_config or {}),
    }
    result = flwr_run({**run_config, "output-dir": str(out)}, federation, timeout=None, stream_to=stream_to)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("status") == "finished":
        return results
    if results.get("status") == "failed":
        who = results.get("institution")
        raise FederatedRunFailed(f"run failed: {f'institution {who}' if who else 'server'}: {results.get('reason')}")
    tail = [line.strip() for line in result.output.splitlines() if line.strip()][-1:] or ["no output"]
    raise FederatedRunFailed(f"flwr run ended (exit {result.returncode}) without results in {out}: {tail[0]}")
