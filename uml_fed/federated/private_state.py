"""An institution's private state in one run, on its own disk: the truth, never on the wire.

``<node output dir>/<institution>/<run key>/``:

* ``round_<r>.pt``: after round r -- the private part of the model (projection, and with ordinary BN
  the backbone's running statistics), the optimizer state (AdamW moments) and the model selection
  (best validation accuracy so far and its round);
* ``selected_<r>.pt``: the weights of the model selected at round r (written once, when selected;
  kept while a kept round file refers to it);
* ``projection.pt``: the latest projection alone (for inspection);
* ``model.pt``: the final reported model (calibrated, or with its running statistics).

The run key names the run (server output directory + config fingerprint, sent by the server with
every message), so a run never restores another run's state and a resumed run finds its own.  A
message may reach a fresh process (deployment) or a restarted node: the state of the newest round
<= the one asked for is read back; states of later rounds (trained, never aggregated before a crash)
are ignored.  Two rounds are kept, because a crash can come between a client's save and the server's
aggregation of that round.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..results import write_atomic

ROUND_FILE = re.compile(r"round_(\d+)\.pt")


class PrivateStateError(ValueError):
    """A stored private state does not fit the institution (other bands, other model)."""


class PrivateStore:
    def __init__(self, base: str | Path, institution: str, run_key: str) -> None:
        if not run_key:
            raise ValueError("a private-state store needs the run key the server sends (config 'run-key')")
        self.path = Path(base).expanduser().resolve() / institution / run_key

    def rounds(self) -> list[int]:
        if not self.path.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.path.iterdir() if (m := ROUND_FILE.fullmatch(p.name)))

    def _file(self, server_round: int) -> Path:
        return self.path / f"round_{server_round}.pt"

    def save(self, server_round: int, state: dict[str, Any], selected_from: int = -1) -> Path:
        """Write the state after ``server_round`` atomically; keep it and the round before, and the
        selected weights from round ``selected_from`` on (the selection of the round before: a
        selection only ever moves to later rounds, so older ones are no longer referenced)."""
        self.save_file(f"round_{server_round}.pt", {"round": server_round, **state})
        for old in self.rounds():
            if old < server_round - 1:
                self._file(old).unlink(missing_ok=True)
        for p in self.path.glob("selected_*.pt"):
            if int(p.stem.split("_")[1]) < selected_from:
                p.unlink(missing_ok=True)
        return self._file(server_round)

    def load(self, upto_round: int) -> dict[str, Any] | None:
        """The state saved after the newest round <= ``upto_round``, or None."""
        done = [r for r in self.rounds() if r <= upto_round]
        if not done:
            return None
        return torch.load(self._file(done[-1]), weights_only=False)

    def has_file(self, name: str) -> bool:
        return (self.path / name).is_file()

    def load_file(self, name: str) -> Any:
        return torch.load(self.path / name, weights_only=False)

    def save_file(self, name: str, payload: Any) -> Path:
        """Atomically; a failed write raises :class:`~uml_fed.results.ArtifactError` naming the file."""
        return write_atomic(self.path / name, lambda tmp: torch.save(payload, tmp))
