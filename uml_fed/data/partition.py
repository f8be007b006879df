"""Split one modality's pool among its institutions with flwr-datasets' partitioners.

The pool's rows (every split's samples, with their label, split and scene metadata) become an
in-memory ``datasets.Dataset`` (no hub, no disk cache) that a partitioner cuts into
``data.partition.institutions`` disjoint parts covering every row:

* ``iid``: :class:`IidPartitioner`'s equal shards of the seeded-shuffled rows;
* ``dirichlet``: :class:`DirichletPartitioner` on the label of the seeded-shuffled rows,
  concentration ``alpha`` (label skew; a class may be missing from a part), ``min_size`` as its
  ``min_partition_size``.  Both partitioners cut *contiguous* runs (Dirichlet: of each class's rows),
  and the pool lists its rows split by split, so unshuffled, a small part would get train rows only;
* ``natural``: :class:`NaturalIdPartitioner` on a metadata column.  With more distinct values than
  institutions, the sorted values are cut into that many contiguous groups (part ``i`` holds
  group ``i``); with fewer, it is an error.

Each part's rows are then grouped by split by the caller, so every institution's val/test follow
its own distribution.  Everything is reproducible from the seed and the pool's name.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .core import SPLITS, DataError

if TYPE_CHECKING:
    from ..config import PartitionConfig


def partition_seed(seed: int, pool: str) -> int:
    return zlib.crc32(f"partition/{int(seed)}/{pool}".encode())


@dataclass
class Pool:
    """A modality's pool as rows: one per sample of every split."""

    name: str  # the modality
    labels: np.ndarray  # class index per row
    splits: Sequence[str]  # train | val | test per row
    meta: dict[str, Sequence[str | None]]  # scene metadata columns (natural partitions)


def partition_rows(rows: Pool, p: PartitionConfig, seed: int) -> list[np.ndarray]:
    """Row indices (ascending) of each of the ``p.institutions`` parts of the pool."""
    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, NaturalIdPartitioner

    labels, pool = rows.labels, rows.name
    n, k, s = len(labels), p.institutions, partition_seed(seed, pool)
    if n < k:
        raise DataError(f"the {pool} pool holds {n} samples, too few for data.partition.institutions={k}")
    columns = {"row": np.arange(n), "label": np.asarray(labels, dtype=np.int64), "split": list(rows.splits)}
    if p.method == "natural":
        columns["group"] = _groups(rows.meta, p.column, k, pool)
    ds = datasets.Dataset.from_dict(columns)
    if p.method != "natural":
        ds = ds.shuffle(seed=s)  # both cut contiguous runs of rows (see above)
    if p.method == "iid":
        partitioner = IidPartitioner(num_partitions=k)
    elif p.method == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=k, partition_by="label", alpha=float(p.alpha), min_partition_size=int(p.min_size),
            self_balancing=False, shuffle=True, seed=s,
        )  # fmt: skip
    else:
        partitioner = NaturalIdPartitioner(partition_by="group")
    partitioner.dataset = ds
    try:
        with contextlib.redirect_stderr(
            io.StringIO()
        ):  # NaturalIdPartitioner's tqdm bar (TQDM_DISABLE is read at import)
            parts = [np.sort(np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64)) for i in range(k)]
    except ValueError as e:  # DirichletPartitioner: "The max number of attempts (10) was reached ..."
        raise DataError(
            f"data.partition (dirichlet, alpha={p.alpha}, min_size={p.min_size}) cannot split the {pool} pool of {n} "
            f"samples into {k} institutions: {e}; raise data.partition.alpha, lower data.partition.min_size or "
            "data.partition.institutions"
        ) from e
    small = {i: len(x) for i, x in enumerate(parts) if len(x) < p.min_size}
    if small:
        raise DataError(
            f"the {pool} pool's parts {small} hold fewer than data.partition.min_size={p.min_size} samples; "
            "lower data.partition.min_size or data.partition.institutions, or enlarge the pool (data.sizes)"
        )
    return parts


def _groups(meta: dict[str, Sequence[str | None]], column: str, k: int, pool: str) -> list[int]:
    """Per row, the index of its group of ``column`` values (sorted values cut into ``k`` runs)."""
    values = meta.get(column)
    if values is None or any(v is None or v == "" for v in values):
        raise DataError(
            f"natural partition of the {pool} pool: scene(s) without a {column!r} value; "
            "choose another data.partition.column or data.partition.method=iid or dirichlet"
        )
    unique = sorted(set(values))
    if len(unique) < k:
        raise DataError(
            f"data.partition.institutions={k} but the {pool} pool has only {len(unique)} {column!r} value(s) "
            f"{unique}; lower data.partition.institutions or use data.partition.method=iid or dirichlet"
        )
    group = {v: g for g, run in enumerate(np.array_split(np.arange(len(unique)), k)) for v in (unique[i] for i in run)}
    return [group[v] for v in values]


REMEDY = {
    "iid": "lower data.partition.institutions",
    "dirichlet": "raise data.partition.alpha, set data.partition.min_size or lower data.partition.institutions",
    "natural": "lower data.partition.institutions (larger groups of data.partition.column values)",
}


def split_parts(rows: Pool, p: PartitionConfig, seed: int, names: list[str]) -> list[dict[str, np.ndarray]]:
    """:func:`partition_rows`, each part's rows grouped by split; institution ``names[i]`` gets part ``i``.

    A part without a train, val or test sample is an error naming the institution and the remedy.
    """
    split_of, pool = np.asarray(rows.splits), rows.name
    out = []
    for name, part in zip(names, partition_rows(rows, p, seed)):
        by_split = {s: part[split_of[part] == s] for s in SPLITS}
        empty = [s for s, r in by_split.items() if len(r) == 0]
        if empty:
            raise DataError(
                f"institution {name!r} gets no {'/'.join(empty)} samples from its part of the {pool} pool "
                f"(data.partition.method={p.method}, institutions={p.institutions}); {REMEDY[p.method]}, "
                f"or enlarge the pool (data.sizes.{pool} / data.*_per_class)"
            )
        out.append(by_split)
    return out
