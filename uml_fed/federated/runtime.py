"""Process-level parts of the Flower apps: torch threads, config, output directory, and ending the
simulated clients a run abandoned."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import torch

from ..config import Config, ConfigError, from_run_config, num_rounds
from ..data import DataError, institution_names
from ..results import ArtifactError, RunDir
from .federation import RunFailed, one_line


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


def configure_torch(cfg: Config) -> None:
    """Match torch's threads to what the node was given (Ray sets OMP_NUM_THREADS per actor)."""
    n = cfg.train.num_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def default_output_dir(cfg: Config | None, run_config: Mapping[str, Any] | None = None) -> Path:
    """The run config's ``output-dir``, else ``<cwd>/outputs/federated/<name>/<time>`` (name
    ``invalid-config`` when there is no valid config to take it from)."""
    given = str((run_config or {}).get("output-dir", "") or "")
    if given:
        return Path(given).expanduser().resolve()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return (Path.cwd() / "outputs" / "federated" / (cfg.name if cfg else "invalid-config") / stamp).resolve()


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError, RunFailed, ArtifactError)


class OneLineUserErrors(logging.Filter):
    """Flower logs an app's exception with its traceback; a user error (a config key, a data path, a
    failed institution) is shown as its one line instead, after Flower's own message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            e = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(e).__name__}: {one_line(str(e))}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_user_errors() -> None:
    """Install :class:`OneLineUserErrors` on Flower's logger (once per process)."""
    flwr_logger = logging.getLogger("flwr")
    if not any(isinstance(f, OneLineUserErrors) for f in flwr_logger.filters):
        flwr_logger.addFilter(OneLineUserErrors())


@contextmanager
def server_run(run_config: Mapping[str, Any]) -> Iterator[tuple[Config, list[str]]]:
    """The ServerApp's run: its typed config and institutions, and on any failure before or during the
    run a ``results.json`` with ``status: failed`` and a one-line reason, and that reason printed
    last (``run failed: ...``) before the error goes on to Flower (which marks the run failed).  Then,
    finished or failed, the simulated clients a run abandoned are stopped."""
    out: Path | None = None
    try:
        with abandoned_clients_ended():
            cfg, institutions = server_config(run_config)
            out = Path(cfg.output_dir)
            yield cfg, institutions
    except RunFailed:
        raise  # run_federated has written the results and printed the reason
    except Exception as e:
        out = out or default_output_dir(None, run_config)
        reason = f"{type(e).__name__}: {one_line(str(e))}"
        RunDir(out).write_results(
            {"mode": "federated", "status": "failed", "institution": None, "reason": reason, "run_dir": str(out)}
        )
        print(f"run failed: server: {reason}", flush=True)
        raise


def server_config(run_config: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """Typed config for the ServerApp with an absolute output directory, and the institutions."""
    cfg = from_run_config(run_config)
    if cfg.method.name != "uml":
        raise ConfigError(
            f"method.name={cfg.method.name}: the comparison baselines run centralized only "
            f"(uml-fed centralized method={cfg.method.name}); federated runs train UML (method=uml)"
        )
    num_rounds(cfg)  # R x L must be the budget: refused before any institution loads data
    cfg.output_dir = str(default_output_dir(cfg, run_config))
    return cfg, institution_names(cfg)


def _busy_actors(raylet: psutil.Process) -> list[psutil.Process]:
    """The ClientApp actors of ``raylet`` handling a message: Ray titles an actor's process
    ``ray::ClientAppActor.run`` while it runs one and ``ray::ClientAppActor`` when idle."""
    out = []
    try:
        children = raylet.children()
    except psutil.NoSuchProcess:  # Ray shut down meanwhile
        return out
    for p in children:
        try:
            if (p.cmdline() or [""])[0].startswith("ray::ClientAppActor."):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_abandoned_clients(raylets: list[psutil.Process]) -> None:
    while alive := [r for r in raylets if _running(r)]:
        stop_processes([a for r in alive for a in _busy_actors(r)], grace=2.0)
        time.sleep(0.5)


@contextmanager
def abandoned_clients_ended() -> Iterator[None]:
    """Around the ServerApp's work in a Ray simulation: once it ends (finished or failed), stop every
    ClientApp actor that is, or later gets, busy with a message nobody will read, until Ray shuts down.

    Flower 1.42's simulation runtime waits for every busy actor before it shuts Ray down (and may still
    hand an actor a message it queued before the ServerApp ended), so an institution hung in its data
    loading would keep the simulation process and its Ray workers alive for ever.  The ServerApp runs
    in the process that started Ray: the actors are children of its raylet.  In a deployment there is
    no raylet and this does nothing.
    """
    try:
        yield
    finally:
        raylets = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.name() == "raylet":
                    raylets.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if raylets:
            threading.Thread(target=_stop_abandoned_clients, args=(raylets,), daemon=True).start()
