"""What the operator sees: one line per round, ``rounds.jsonl``, and (optionally) TensorBoard.

Per round: who was asked, who replied, who failed (and why) or never answered, each institution's
training loss/accuracy, the validation accuracy of the model that arrived, its training time; the
round's time, the orchestration overhead (round time minus the slowest institution's training) and
an estimate of the time left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

from flwr.app import Message
from flwr.common.logger import log

from ..results import RunDir
from .federation import one_line


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class RoundLog:
    rounds_total: int
    run: RunDir | None = None
    tensorboard: Any = None  # a torch.utils.tensorboard SummaryWriter, or None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    warned_serial: bool = False

    def record(self, server_round: int, asked: list[str], replies: dict[str, Message], seconds: float) -> dict:
        """Log one round from its final replies per institution (missing = asked, never answered)."""
        ok, failed, clients = [], {}, {}
        for who, msg in sorted(replies.items()):
            if msg.has_error():
                failed[who] = one_line(msg.error.reason)
            else:
                ok.append(who)
                clients[who] = dict(msg.content["metrics"])
        train_s = max((c.get("train-time-s", 0.0) for c in clients.values()), default=0.0)
        row = {
            "round": server_round,
            "replied": ok,
            "failed": failed,
            "missing": sorted(set(asked) - set(replies)),
            "round_s": seconds,
            "max_client_train_s": train_s,
            "overhead_s": max(0.0, seconds - train_s),
            "clients": clients,
        }
        self.rounds.append(row)
        if self.run is not None:
            self.run.log(row, file="rounds.jsonl")
        self._print(row)
        self._check_parallel(row)
        return row

    def _check_parallel(self, row: dict[str, Any]) -> None:
        """Say so when the institutions of a round trained one after another (e.g. Flower's default
        of 2 CPUs per simulated client on a 2-core machine leaves room for one client at a time)."""
        times = [c.get("train-time-s", 0.0) for c in row["clients"].values()]
        if self.warned_serial or row["round"] < 2 or len(times) < 2 or sum(times) < 1.5 * max(times):
            return
        if row["round_s"] >= 0.9 * sum(times):
            self.warned_serial = True
            log(
                WARNING,
                "round %d took %.1f s, the sum of the institutions' training times (%s): they trained "
                "one after another. In a Ray simulation give each client fewer CPUs so that they run side by "
                'side, e.g. --federation-config "num-supernodes=%d client-resources-num-cpus=1" (Flower\'s '
                "default is 2 per client)",
                row["round"],
                row["round_s"],
                ", ".join(f"{t:.1f} s" for t in times),
                len(times),
            )

    def _print(self, row: dict[str, Any]) -> None:
        r = row["round"]
        done = [x["round_s"] for x in self.rounds]
        eta = sum(done) / len(done) * (self.rounds_total - r)
        parts = [
            f"{who}: loss {c['train-loss']:.3f} acc {c['train-acc']:.3f} val {c['arrived-val-acc']:.3f} "
            f"({c['train-time-s']:.1f} s)"
            for who, c in row["clients"].items()
        ]
        parts += [f"{who}: FAILED ({why})" for who, why in row["failed"].items()]
        parts += [f"{who}: no reply" for who in row["missing"]]
        log(
            INFO,
            "round %d/%d | %s | round %.1f s, overhead %.1f s, ETA %s",
            r,
            self.rounds_total,
            " | ".join(parts),
            row["round_s"],
            row["overhead_s"],
            _fmt_s(eta),
        )
        for who, why in row["failed"].items():
            log(WARNING, "round %d: institution %s failed: %s", r, who, why)
        if self.tensorboard is not None:
            for who, c in row["clients"].items():
                for key in ("train-loss", "train-acc", "arrived-val-acc", "train-time-s"):
                    self.tensorboard.add_scalar(f"{who}/{key}", c[key], r)
            self.tensorboard.add_scalar("round/seconds", row["round_s"], r)
            self.tensorboard.add_scalar("round/overhead_s", row["overhead_s"], r)
            self.tensorboard.flush()


def tensorboard_writer(enabled: bool, run: RunDir) -> Any:
    """A SummaryWriter in ``<run>/tensorboard`` (``fed.tensorboard=true``; needs the `tensorboard` extra)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "fed.tensorboard=true needs TensorBoard: pip install 'uml-fed[tensorboard]' (or tensorboard)"
        ) from e
    return SummaryWriter(str(run.path / "tensorboard"))
