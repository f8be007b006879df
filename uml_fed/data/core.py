"""What every data source hands to training: one :class:`Institution` per institution of the config.

An institution holds ONE modality (a sensor, or a single band in the fine-grained setting) with its
own train/val/test arrays; several institutions may hold the same modality (same bands, so the same
projection shape), each with its own scenes.  :class:`InstitutionSpec` says which, before any I/O.  Arrays are float32 ``N x C x H x W`` in physical units (reflectance x 1e4,
dB, ...) until :func:`normalize_institution` z-scores them with per-band statistics; labels are int64
indices into the shared class list.  Institutions never share samples (unpaired) unless a source was
explicitly asked for a paired split.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..config import DataConfig

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad data: the message names the modality, file or value at fault."""


def check_fits(what: str, shape: tuple[int, ...], itemsize: int, remedy: str) -> None:
    """Refuse an array that cannot fit in this machine's free memory before allocating it."""
    import psutil

    need = math.prod(shape) * itemsize
    free = psutil.virtual_memory().available
    if need > free:
        raise DataError(
            f"{what}: {' x '.join(map(str, shape))} values need {need / 2**30:.1f} GiB, more than the "
            f"{free / 2**30:.1f} GiB of free memory; {remedy}"
        )


@dataclass(frozen=True)
class InstitutionSpec:
    """Who an institution is and what it holds, known from the config alone (no pixels read)."""

    name: str  # unique; what a deployed node's config names (node config `institution`)
    modality: (
        str  # same modality = same bands = same projection shape: the sensor (s1, s2, rgb, ...) or <sensor>_<band>
    )
    sensor: str  # the source's sensor key whose files it reads
    bands: tuple[str, ...]  # () = not known on this machine (own data whose folder is at another node)
    part: int = -1  # index of its part of its modality's pool (data.partition); -1 = not partitioned
    parts: int = 1  # number of parts of that pool


@dataclass
class Split:
    images: np.ndarray  # float32 N x C x H x W
    labels: np.ndarray  # int64 N
    ids: list[str] = field(default_factory=list)  # scene / patch ids (for the unpaired check and reports)
    meta: dict[str, list[str]] = field(
        default_factory=dict
    )  # per-sample scene metadata (column -> N values), e.g. region, country

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Institution:
    """One institution's data.  ``bands`` names the channels in order; ``modality`` is its projection group."""

    name: str
    bands: list[str]
    classes: list[str]
    splits: dict[str, Split]
    mean: np.ndarray | None = None  # per-band normalisation mean (set by normalize_institution)
    std: np.ndarray | None = None  # per-band normalisation std
    source: str = ""
    modality: str = ""  # institutions of one modality share band names (one projection shape); "" = name
    pixel_size_m: float | None = None  # ground sampling of the patches in metres; None = not geographic / unknown

    def __post_init__(self) -> None:
        if not self.modality:
            self.modality = self.name

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DataError(f"institution {self.name!r} has no {name!r} split (has {sorted(self.splits)})")
        return self.splits[name]


def band_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over N, H, W (float64 accumulation)."""
    x = images.astype(np.float64, copy=False)
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalize_institution(
    inst: Institution, mean: np.ndarray | None = None, std: np.ndarray | None = None, constant_bands: str = "error"
) -> Institution:
    """Z-score every split with per-band stats: given (published), or from the institution's OWN train split.

    A band that is constant over the training split is an error naming it (a z-score divides by its
    standard deviation: ~0 here, so any other value at prediction time would explode); with
    ``constant_bands="warn"`` it is kept with a warning, centred but not scaled (std 1).
    """
    train = inst.split("train").images
    own = mean is None or std is None
    if own:
        mean, std = band_stats(train)
    mean = np.array(mean, dtype=np.float32)
    std = np.array(std, dtype=np.float32)
    if mean.shape != (inst.in_channels,):
        raise DataError(f"{inst.name}: {mean.shape[0]} normalisation means for {inst.in_channels} bands {inst.bands}")
    if len(train):
        low, high = train.min(axis=(0, 2, 3)), train.max(axis=(0, 2, 3))
        flat = np.flatnonzero(low == high)
        if flat.size:
            what = (
                f"institution {inst.name!r}: band(s) "
                + ", ".join(f"{inst.bands[i]!r} (always {float(low[i]):g})" for i in flat)
                + " constant over its training split"
            )
            if constant_bands != "warn":
                raise DataError(
                    f"{what}; a z-score divides by the band's standard deviation, so drop the band "
                    "(data.bands, data.institutions[*].bands) or set data.constant_bands=warn to keep it unscaled"
                )
            warnings.warn(f"{what}; kept centred but unscaled (data.constant_bands=warn)", stacklevel=2)
            if own:
                std[flat] = 1.0
    for s in inst.splits.values():
        s.images = ((s.images - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    inst.mean, inst.std = mean, std
    return inst


def seeded_order(ids: list[str], seed: int, split: str) -> np.ndarray:
    """The canonical order of a split's samples: by id, then a permutation seeded by ``seed`` and
    the split name (not the institution: paired institutions keep the same scene order)."""
    by_id = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    rng = np.random.default_rng([int(seed), zlib.crc32(f"order/{split}".encode())])
    return by_id[rng.permutation(len(by_id))]


def canonical_order(inst: Institution, seed: int) -> Institution:
    """Put every split in one seeded shuffled order that depends only on its sample ids.

    Sources read splits in whatever order suits them (the archives: class by class).  With static
    BN an evaluation batch is normalised with its own statistics, and training and calibration
    batches are drawn from positions in the split, so a stored order would leak into the results;
    :func:`seeded_order` makes every reported number independent of it.  Splits already in that
    order (e.g. read from the decode-once cache, which stores them so) are left as they are.
    """
    for name, s in inst.splits.items():
        if len(s.ids) != len(s):
            raise DataError(f"institution {inst.name!r} {name}: {len(s.ids)} sample ids for {len(s)} samples")
        order = seeded_order(s.ids, seed, name)
        if not np.array_equal(order, np.arange(len(order))):
            s.images, s.labels = s.images[order], s.labels[order]
            s.ids = [s.ids[i] for i in order]
            s.meta = {k: [v[i] for i in order] for k, v in s.meta.items()}
    return inst


def check_institution(inst: Institution, expected_bands: int | None = None) -> None:
    """Loud, specific checks before any training: band count, finiteness, emptiness, labels."""
    for name, s in inst.splits.items():
        if len(s) == 0:
            raise DataError(f"institution {inst.name!r}: the {name!r} split is empty")
        if s.images.ndim != 4:
            raise DataError(
                f"institution {inst.name!r} {name}: images must be N x C x H x W, got shape {s.images.shape}"
            )
        if s.images.shape[0] != s.labels.shape[0]:
            raise DataError(
                f"institution {inst.name!r} {name}: {s.images.shape[0]} images but {s.labels.shape[0]} labels"
            )
        if s.images.shape[1] != inst.in_channels:
            raise DataError(
                f"institution {inst.name!r} {name}: images have {s.images.shape[1]} bands but the modality "
                f"is configured with {inst.in_channels} bands {inst.bands}"
            )
        if not np.isfinite(s.images).all():
            bad = int((~np.isfinite(s.images)).sum())
            raise DataError(f"institution {inst.name!r} {name}: {bad} NaN/inf pixel values in the input")
        for col, values in s.meta.items():
            if len(values) != len(s):
                raise DataError(f"institution {inst.name!r} {name}: {len(values)} {col!r} values for {len(s)} samples")
        if len(set(s.ids)) != len(s.ids):
            raise DataError(f"institution {inst.name!r} {name}: sample ids are not unique")
        if s.labels.min() < 0 or s.labels.max() >= len(inst.classes):
            raise DataError(
                f"institution {inst.name!r} {name}: label {int(s.labels.max())} outside 0..{len(inst.classes) - 1}"
            )
    if expected_bands is not None and inst.in_channels != expected_bands:
        raise DataError(
            f"institution {inst.name!r} has {inst.in_channels} bands but its model expects {expected_bands}"
        )


def check_same_classes(institutions: list[Institution]) -> list[str]:
    """All institutions must share one label space (Assumption 2); returns it."""
    ref = institutions[0]
    for inst in institutions[1:]:
        if list(inst.classes) != list(ref.classes):
            raise DataError(
                f"institutions {ref.name!r} and {inst.name!r} have different class lists: "
                f"{list(ref.classes)} vs {list(inst.classes)}"
            )
    return list(ref.classes)


def unit_of(spec: InstitutionSpec) -> str:
    """Who owns the institution's split sizes and scenes: itself, or its partitioned modality's pool."""
    return spec.modality if spec.part >= 0 else spec.name


def size_keys(specs: list[InstitutionSpec]) -> list[str]:
    return list(dict.fromkeys(unit_of(s) for s in specs))


def allocation_units(specs: list[InstitutionSpec]) -> list[tuple[str, str]]:
    """``(unit, sensor)`` the allocation deals scenes to: unpartitioned institutions and pools."""
    return list(dict.fromkeys((unit_of(s), s.sensor) for s in specs))


def specs_by_root(d: DataConfig, specs: list[InstitutionSpec]) -> dict[str, list[InstitutionSpec]]:
    """Institutions grouped by dataset root (explicit ``root``, else ``data.root``), in order."""
    roots = {i.name: i.root for i in d.institutions}
    out: dict[str, list[InstitutionSpec]] = {}
    for s in specs:
        out.setdefault(roots.get(s.name) or str(d.root or ""), []).append(s)
    return out


def find(specs: list[InstitutionSpec], only: str | None) -> list[InstitutionSpec]:
    """``specs`` or just the one named ``only`` (a federated node loads its own institution only)."""
    if only is None:
        return specs
    hit = [s for s in specs if s.name == only]
    if not hit:
        raise DataError(
            f"unknown modality {only!r}: no institution of this data config has that name; "
            f"its institutions are {[s.name for s in specs]}"
        )
    return hit
