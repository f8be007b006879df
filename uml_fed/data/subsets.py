"""Class-balanced single-label subsets, strictly unpaired across institutions by default.

The archives are co-registered: an S1 patch and the S2 patch of the same place are ONE scene.
:func:`allocate` shuffles each class's scenes with a seeded generator and deals them out so that no
scene reaches two institutions (``paired=False``); with ``paired=True`` every institution gets the
same scene order (the paired-data reference only).  Each institution's pool holds the scenes it
needs (train, then val, then test) followed by spares that replace unreadable patches when
``data.skip_unreadable`` is set.

Sizes are PER CLASS (``data.*_per_class``).  The paper's Table 6 gives totals; :data:`PRESETS`
converts them (rounded to the nearest integer per class).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .base import DataError

if TYPE_CHECKING:
    from .real import Scene


@dataclass(frozen=True)
class Preset:
    classes: tuple[str, ...]
    totals: tuple[int, int, int]  # train, val, test over all classes (paper Table 6)
    lowdata_train_per_class: int = 100

    def per_class(self, lowdata: bool = False) -> tuple[int, int, int]:
        tr, va, te = (round(t / len(self.classes)) for t in self.totals)
        return (self.lowdata_train_per_class if lowdata else tr), va, te


PRESETS: dict[str, Preset] = {
    "bigearthnet_mm": Preset(
        ("Arable land", "Broad-leaved forest", "Coniferous forest", "Marine waters", "Pastures", "Urban fabric"),
        (1800, 400, 700),
    ),
    "sen12ms_summer": Preset(
        (
            "Evergreen broadleaf forest",
            "Open shrublands",
            "Savannas",
            "Grasslands",
            "Croplands",
            "Urban and built-up",
            "Water bodies",
        ),
        (300, 400, 400),
    ),
    "eurosat_s1_rgb": Preset(
        (
            "AnnualCrop",
            "Forest",
            "HerbaceousVegetation",
            "Highway",
            "Industrial",
            "Pasture",
            "PermanentCrop",
            "Residential",
            "River",
            "SeaLake",
        ),
        (1000, 400, 400),
    ),
}


@dataclass
class Plan:
    classes: list[str]
    scenes: dict[str, "Scene"]  # scene id -> scene
    pools: dict[str, dict[str, list[str]]]  # institution -> class -> scene ids (needed first, then spares)
    need: dict[str, dict[str, tuple[int, int, int]]]  # institution -> class -> (train, val, test)
    notes: list[str] = field(default_factory=list)


def _rng(seed: int, cls: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(cls.encode())]))


def allocate(
    scenes: list["Scene"],
    classes: list[str],
    institutions: list[tuple[str, str]],
    sizes: tuple[int, int, int],
    seed: int = 0,
    paired: bool = False,
    short_class: str = "raise",
    source: str = "",
    coregistered: bool = False,
) -> Plan:
    """Per-class scene pools for each ``(institution name, modality)``.

    Unpaired: a class's shuffled scenes are dealt one by one to the eligible institution (whose
    modality the scene has) with the fewest scenes so far, so pools are disjoint and near-equal.
    A class that cannot give every institution ``sum(sizes)`` scenes is handled by ``short_class``:
    ``raise`` (default), ``shrink`` (that class gets proportionally smaller splits) or ``drop``
    (the class is removed); the message names the class, how many exist and what was done.

    ``coregistered`` (the archives): every scene counts as having every modality, so a federated node
    that holds only its own modality's files computes the same allocation as one holding them all.
    """
    if short_class not in ("raise", "shrink", "drop"):
        raise DataError(f"data.short_class={short_class!r} must be 'raise', 'shrink' or 'drop'")
    need_total = sum(sizes)
    by_class: dict[str, list["Scene"]] = {c: [] for c in classes}
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
        members = sorted(by_class[c], key=lambda s: s.id)
        order = _rng(seed, c).permutation(len(members))
        shuffled = [members[i] for i in order]
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
                    target = min(eligible, key=lambda n: len(pools[n][c]))
                    pools[target][c].append(s.id)
        short = {n: len(pools[n][c]) for n in names if len(pools[n][c]) < need_total}
        if not short:
            kept.append(c)
            for n in names:
                need[n][c] = tuple(sizes)
            continue
        avail = min(short.values())
        what = (
            f"{source + ': ' if source else ''}class {c!r} has {len(members)} single-label scenes; "
            f"{len(names)} institution(s) {'sharing them (paired)' if paired else 'with disjoint scenes (unpaired)'} "
            f"need {need_total} each (train/val/test {sizes[0]}/{sizes[1]}/{sizes[2]}), "
            f"but institution(s) {sorted(short)} get only {avail}"
        )
        if short_class == "raise":
            raise DataError(
                what + "; lower data.train_per_class/val_per_class/test_per_class, set data.short_class=shrink "
                "or drop, or choose other data.classes"
            )
        if short_class == "drop":
            msg = what + f"; dropped class {c!r} (data.short_class=drop)"
        else:
            kept.append(c)
            for n in names:
                n_av = min(len(pools[n][c]), need_total)
                need[n][c] = _shrink(sizes, n_av, c)
            smallest = min(short, key=short.get)
            msg = what + f"; shrunk this class to train/val/test {need[smallest][c]} for {smallest!r} (data.short_class=shrink)"
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
