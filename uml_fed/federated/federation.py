"""Who is who: the nodes of a run and the institutions they serve, the handshake, and the poller.

A node's institution is learned from its ``query.describe`` reply (name, modality, classes, bands,
training-set size; no data).  A restarted SuperNode may come back under a new node id:
:meth:`Federation.refresh` describes nodes it has not seen yet.  Errors the SuperLink makes itself
(e.g. "node unavailable" for a dead SuperNode) are attributed to the institution the message was for.
"""

from __future__ import annotations

import time
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import log
from flwr.serverapp import Grid

from ..config import Config
from . import records


class RunFailed(RuntimeError):
    """The run cannot go on; names the institution and the reason (one line)."""

    def __init__(self, institution: str, reason: str) -> None:
        self.institution, self.reason = institution, one_line(reason)
        super().__init__(f"institution {institution}: {self.reason}")


def one_line(reason: str) -> str:
    """An error reason as one line: of a traceback (e.g. from Ray) its last line, the error; of a
    multi-line message (an error followed by help, e.g. a dataset layout) its first, what failed."""
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    if not lines:
        return str(reason)
    traceback = any(line.startswith(("Traceback (most recent call last)", 'File "')) for line in lines)
    return lines[-1] if traceback else lines[0]


def exchange(
    grid: Grid, messages: list[Message], timeout: float, sent_to: dict[str, int] | None = None, poll: float = 0.1
) -> list[Message]:
    """Push ``messages`` and pull their replies until all are in or ``timeout`` passes.

    ``Grid.send_and_receive`` does the same, but the HttpGrid a ServerApp gets under ``flwr run``
    sleeps a fixed 3 s between pulls; polling the same public push/pull API every ``poll`` seconds
    removes that wait.  ``sent_to`` collects each pushed message's destination node.
    """
    ids = list(grid.push_messages(messages))
    if sent_to is not None:
        sent_to.update(zip(ids, (m.metadata.dst_node_id for m in messages)))
    pending, replies = set(ids), []
    deadline = time.monotonic() + timeout
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return replies


class Federation:
    def __init__(self, grid: Grid, cfg: Config) -> None:
        self.grid, self.cfg = grid, cfg
        self.names: dict[int, str] = {}  # node id -> institution
        self.info: dict[str, dict[str, Any]] = {}  # institution -> its description
        self.sent_to: dict[str, int] = {}  # message id -> destination node

    @property
    def modality_of(self) -> dict[str, str]:
        return {name: str(info["modality"]) for name, info in self.info.items()}

    def describe_all(self) -> dict[str, str]:
        return {f"node {n}": who for n, who in sorted(self.names.items())}

    def who(self, msg: Message) -> str:
        node = msg.metadata.src_node_id
        if node == SUPERLINK_NODE_ID:
            node = self.sent_to.get(msg.metadata.reply_to_message_id, node)
        return self.names.get(node, f"node-{node}")

    def nodes_of(self, institutions: list[str]) -> dict[int, str]:
        return {n: who for n, who in self.names.items() if who in institutions}

    def query(
        self, message_type: str, content: RecordDict, institutions: list[str], timeout: float
    ) -> dict[str, Message]:
        messages = [
            Message(content=content, dst_node_id=n, message_type=message_type)
            for n in sorted(self.nodes_of(institutions))
        ]
        return {
            self.who(m): m for m in exchange(self.grid, messages, timeout, self.sent_to, self.cfg.fed.poll_interval)
        }

    def describe(self, node_ids: list[int], timeout: float) -> list[int]:
        """Ask ``node_ids`` who they are; returns the nodes that did not answer.  A node that now
        serves an institution seen before replaces its old node id (a restarted SuperNode)."""
        content = RecordDict({records.CONFIG: ConfigRecord({})})
        messages = [Message(content=content, dst_node_id=n, message_type=records.DESCRIBE) for n in node_ids]
        replies = exchange(self.grid, messages, timeout, self.sent_to, self.cfg.fed.poll_interval)
        answered = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                node = self.sent_to.get(msg.metadata.reply_to_message_id, node)
                log(WARNING, "node %s could not describe itself: %s", node, msg.error.reason)
                continue
            info = dict(msg.content[records.INFO])
            who = str(info["institution"])
            if info.get("error"):
                raise RunFailed(who, str(info["error"]))
            other = [n for n, w in self.names.items() if w == who and n != node]
            if other and self._alive(other[0]):
                raise RunFailed(who, f"two nodes ({other[0]} and {node}) both claim this institution")
            for n in other:
                del self.names[n]
            self._check_classes(who, list(info["classes"]))
            self.names[node], self.info[who] = who, info
            answered.add(node)
        return [n for n in node_ids if n not in answered]

    def _alive(self, node: int) -> bool:
        return node in set(self.grid.get_node_ids())

    def _check_classes(self, who: str, classes: list[str]) -> None:
        for other, info in self.info.items():
            if other != who and list(info["classes"]) != classes:
                raise RunFailed(
                    who,
                    f"its class list {classes} differs from {other!r}'s {list(info['classes'])}; "
                    "all institutions must share one label space",
                )

    def refresh(self, timeout: float) -> None:
        """Describe nodes that connected since the last look."""
        new = [n for n in self.grid.get_node_ids() if n not in self.names]
        if new:
            self.describe(sorted(new), timeout)


def handshake(grid: Grid, cfg: Config, expected: list[str]) -> tuple[Federation, list[str]]:
    """Wait (``fed.handshake_timeout``) for the institutions' nodes and describe them.

    With ``fed.min_nodes=0`` every expected institution must answer, else the run ends at once
    naming the missing ones; unknown institutions and differing class lists are refused.
    """
    federation = Federation(grid, cfg)
    deadline = time.monotonic() + cfg.fed.handshake_timeout
    while True:
        federation.refresh(max(1.0, deadline - time.monotonic()))
        missing = sorted(set(expected) - set(federation.names.values()))
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(cfg.fed.poll_interval * 10)
    unknown = sorted(set(federation.names.values()) - set(expected))
    if unknown:
        raise RunFailed(unknown[0], f"is not an institution of this run {expected}")
    if missing and (cfg.fed.min_nodes == 0 or len(expected) - len(missing) < cfg.fed.min_nodes):
        raise RunFailed(
            missing[0],
            f"did not answer the handshake within fed.handshake_timeout="
            f"{cfg.fed.handshake_timeout:.0f} s (not connected, or still loading its "
            f"data); missing: {missing}",
        )
    if missing:
        log(
            WARNING,
            "institutions %s did not answer the handshake; continuing (fed.min_nodes=%d)",
            missing,
            cfg.fed.min_nodes,
        )
    classes = list(next(iter(federation.info.values()))["classes"])
    return federation, classes
