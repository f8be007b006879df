"""Class-balanced single-label subsets, strictly unpaired across institutions by default.

The archives are co-registered: an S1 patch and the S2 patch of the same place are ONE scene.
:func:`allocate` shuffles each class's scenes with a seeded generator and deals them out so that no
scene reaches two institutions (``paired=False``); with ``paired=True`` every institution gets the
same scene order (the paired-data reference only).  Each institution's pool holds the scenes it
needs (train, then val, then test) followed by spares that replace unreadable patches when
``data.skip_unreadable`` is set.

Sizes are PER CLASS (``data.*_per_class``, or ``data.sizes.<institution>``), as every number of the
paper's Table 6 (the presets in ``configs/data`` and ``configs/experiment`` follow it).
"""

from __future__ import annotations

import hashlib
import warnings
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..core import DataError

if TYPE_CHECKING:
    from .base import Scene


@dataclass
class Plan:
    classes: list[str]
    scenes: dict[str, Scene]  # scene id -> scene
    pools: dict[str, dict[str, list[str]]]  # institution -> class -> scene ids (needed first, then spares)
    need: dict[str, dict[str, tuple[int, int, int]]]  # institution -> class -> (train, val, test)
    notes: list[str] = field(default_factory=list)


def _rng(seed: int, cls: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(cls.encode())]))


def _shuffled(members: list[Scene], seed: int, cls: str, coregistered: bool) -> list[Scene]:
    """A class's scenes in seeded random order.  Co-registered archives: a permutation of the scenes
    sorted by id (every node lists them all).  Otherwise a node lists only its own modality's scenes,
    so each scene's place is a seeded hash of its id alone: any node orders its scenes as a node
    that lists every modality's does."""
    if coregistered:
        ordered = sorted(members, key=lambda s: s.id)
        return [ordered[i] for i in _rng(seed, cls).permutation(len(ordered))]
    return sorted(members, key=lambda s: hashlib.sha1(f"{seed}/{cls}/{s.id}".encode()).digest())


def allocate(
    scenes: list[Scene],
    classes: list[str],
    institutions: list[tuple[str, str]],
    sizes: dict[str, tuple[int, int, int]],
    seed: int = 0,
    paired: bool = False,
    short_class: str = "raise",
    source: str = "",
    coregistered: bool = False,
) -> Plan:
    """Per-class scene pools for each ``(institution name, modality)``; ``sizes`` maps every
    institution to its (train, val, test) per class.

    Unpaired: a class's shuffled scenes are dealt one by one to the eligible institution (whose
    modality the scene has) with the smallest pool relative to its need, so pools are disjoint and
    proportional to the sizes.  A class that cannot give an institution ``sum(sizes)`` scenes is
    handled by ``short_class``:
    ``raise`` (default), ``shrink`` (that class gets proportionally smaller splits) or ``drop``
    (the class is removed); the message names the class, how many exist and what was done.

    ``coregistered`` (the archives): every scene counts as having every modality, so a federated node
    that holds only its own modality's files computes the same allocation as one holding them all.
    Otherwise (own data) a scene goes only to institutions of a modality it has, and a node that lists
    only its own modality's scenes gives them the pools a node listing every modality's would (when no
    scene has two modalities: equal file stems in two modality folders).
    """
    if short_class not in ("raise", "shrink", "drop"):
        raise DataError(f"data.short_class={short_class!r} must be 'raise', 'shrink' or 'drop'")
    need_total = {n: sum(sizes[n]) for n, _ in institutions}
    by_class: dict[str, list[Scene]] = {c: [] for c in classes}
    for s in scenes:
        if s.label in by_class:
            by_class[s.label].append(s)
    names = [n for n, _ in institutions]
    pools: dict[str, dict[str, list[str]]] = {n: {} for n in names}
    need: dict[str, dict[str, tuple[int, int, int]]] = {n: {} for n in names}
    notes: list[str] = []
    kept: list[str] = []
    mods = sorted({m for _, m in institutions})
    for c in classes:
        members = by_class[c]
        shuffled = _shuffled(members, seed, c, coregistered)
        if paired:
            common = [s.id for s in shuffled if coregistered or all(m in s.files for m in mods)]
            for n in names:
                pools[n][c] = list(common)
        else:
            for n in names:
                pools[n][c] = []
            for s in shuffled:
                eligible = [n for n, m in institutions if coregistered or m in s.files]
                if eligible:
                    target = min(eligible, key=lambda n: len(pools[n][c]) / need_total[n])
                    pools[target][c].append(s.id)
        short = {n: len(pools[n][c]) for n in names if len(pools[n][c]) < need_total[n]}
        if not short:
            kept.append(c)
            for n in names:
                need[n][c] = tuple(sizes[n])
            continue
        wanted = ", ".join(f"{n} {'/'.join(map(str, sizes[n]))}" for n in names)
        what = (
            f"{source + ': ' if source else ''}class {c!r} has {len(members)} single-label scenes; "
            f"{len(names)} institution(s) {'sharing them (paired)' if paired else 'with disjoint scenes (unpaired)'} "
            f"need train/val/test {wanted}, but institution(s) {sorted(short)} get only "
            f"{', '.join(str(short[n]) for n in sorted(short))}"
        )
        if short_class == "raise":
            raise DataError(
                what
                + "; lower data.train_per_class/val_per_class/test_per_class (or data.sizes), set data.short_class=shrink "
                "or drop, or choose other data.classes"
            )
        if short_class == "drop":
            msg = what + f"; dropped class {c!r} (data.short_class=drop)"
        else:
            kept.append(c)
            for n in names:
                n_av = min(len(pools[n][c]), need_total[n])
                need[n][c] = _shrink(sizes[n], n_av, c)
            smallest = min(short, key=short.get)
            msg = (
                what
                + f"; shrunk this class to train/val/test {need[smallest][c]} for {smallest!r} (data.short_class=shrink)"
            )
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    if not kept:
        raise DataError(f"{source}: no class left after handling short classes: {notes}")
    for n in names:
        pools[n] = {c: pools[n][c] for c in kept}
        need[n] = {c: need[n][c] for c in kept}
    scene_map = {s.id: s for c in kept for s in by_class[c]}
    return Plan(kept, scene_map, pools, need, notes)


def _shrink(sizes: tuple[int, int, int], available: int, cls: str) -> tuple[int, int, int]:
    total = sum(sizes)
    if available >= total:
        return tuple(sizes)
    va = int(sizes[1] * available / total)
    te = int(sizes[2] * available / total)
    tr = available - va - te
    if min(tr, va, te) < 1:
        raise DataError(
            f"class {cls!r}: only {available} scenes per institution, too few for non-empty train/val/test splits"
        )
    return tr, va, te
