"""Archive readers: :class:`RealSource`, the base every reader derives from, and how an archive becomes
institutions: scan -> allocate -> partition -> decode -> cache -> normalise.

A reader takes explicit arguments (root, sensors, bands, classes, resize and its own options), validates
them before any I/O, scans the archive into :class:`~.base.Scene` objects and decodes one patch at a time
(:meth:`RealSource.scan`, :meth:`RealSource.read`); the rest is here:

1. the config's institutions are derived and validated (:mod:`uml_fed.data.specs`, no I/O);
2. each dataset root is *scanned* once: every single-label scene with its files and metadata (the
   scan is cached, keyed by the label files' names, sizes and mtimes);
3. :func:`.allocate.allocate` gives every unpartitioned institution, and every
   partitioned modality's pool, its own class-balanced scenes -- disjoint across all of them
   (unpaired) unless ``data.paired`` is set;
4. a partitioned pool's rows (all splits) are cut among its institutions (:mod:`uml_fed.data.partition`);
5. each institution's patches are decoded once into a compact ``.npy`` cache (:mod:`.cache`);
   later calls read the cache only, never the GeoTIFFs;
6. arrays are z-scored with per-band statistics (own train split, or the published ones); a band
   constant over the training split is an error naming it (``data.constant_bands=warn`` keeps it).

A federated node asks for its own institution only (``only``): it reads its own sensor's files and
the shared label files, and computes the same allocation and partition as every other node.  A
source whose modalities hold different files (own data: ``coregistered=False``) reads only the
folders on the node's machine, and its allocation deals out only the node's own sensor's scenes (a
scene of another sensor could only go to that sensor's institutions).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import (
    SPLITS,
    DataError,
    Institution,
    InstitutionSpec,
    Split,
    allocation_units,
    check_fits,
    find,
    normalize_institution,
    seeded_order,
    specs_by_root,
    unit_of,
)
from ..partition import Pool, split_parts
from .allocate import Plan, allocate
from .base import MissingDataError, ScanResult, Scene, Sensor, Source
from .cache import InstitutionCache, digest, load_scan
from .registry import make_source

if TYPE_CHECKING:
    from ...config import DataConfig

CACHE_FORMAT = 2  # 2: splits stored in their seeded shuffled order; bump when the decoded content of a cache changes for the same options


class RealSource(Source):
    """Base class of the archive readers (torchgeo style: bands and statistics are class attributes).

    Subclasses set ``name``, ``sensors``, ``classes`` (default, the paper's), ``all_classes`` (the
    nomenclature), ``layout``, ``meta_columns`` (scene metadata for natural partitions) and
    ``options`` (their own keyword arguments, named as the ``data.*`` keys they come from), and
    implement :meth:`scan_inputs`, :meth:`scan` and :meth:`read`.
    """

    name: str = ""
    coregistered: bool = True  # every scene has every sensor (the archives): allocation ignores file presence
    sensors: dict[str, Sensor] = {}
    classes: tuple[str, ...] = ()
    all_classes: tuple[str, ...] = ()
    layout: str = ""
    meta_columns: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    ground_sampling_m: float | None = 10.0  # metres per pixel at a sensor's native patch side; None = unknown

    @classmethod
    def from_config(
        cls, d: DataConfig, root: str | Path | None = None, modalities: Sequence[str] | None = None
    ) -> RealSource:
        """The one place that maps ``data.*`` keys onto a reader's explicit arguments."""
        return cls(
            root if root is not None else d.root,
            modalities=list(d.modalities if modalities is None else modalities),
            bands=dict(d.bands),
            classes=list(d.classes),
            resize=int(d.resize),
            **{opt: getattr(d, opt) for opt in cls.options},
        )

    def load(
        self, d: DataConfig, seed: int, specs: list[InstitutionSpec], only: str | None = None
    ) -> list[Institution]:
        """Scan, allocate, partition, decode (once, into the cache) and normalise (module docstring)."""
        insts, _ = build_real(d, seed, specs, only=only)
        return normalize(d, insts, specs)

    def __init__(
        self,
        root: str | Path | None,
        *,
        modalities: Sequence[str] = (),
        bands: Mapping[str, Sequence[str]] | None = None,
        classes: Sequence[str] = (),
        resize: int = 0,
    ) -> None:
        if not root:
            raise MissingDataError(
                f"{self.name}: data.root is not set; pass data.root=/path/to/the/archive. Expected layout:\n{self.layout}"
            )
        self.root = Path(str(root)).expanduser()
        self.modalities = list(modalities)
        self.bands = {m: list(b) for m, b in dict(bands or {}).items()}
        self.chosen_classes = list(classes)
        self.resize = int(resize or 0)
        if self.resize < 0:
            raise DataError(f"data.resize={self.resize} must be >= 0 (0 = native patch size)")
        self.validate()

    # -- validation (no I/O) -------------------------------------------------------------------------
    def validate(self) -> None:
        for m in self.modalities:
            if m not in self.sensors:
                raise DataError(f"{m!r} is not a modality of {self.name}; choose from {sorted(self.sensors)}")
        for m, bands in self.bands.items():
            if m not in self.sensors:
                raise DataError(
                    f"data.bands names {m!r}, which is not a modality of {self.name} ({sorted(self.sensors)})"
                )
            self.check_bands(m, bands, f"data.bands.{m}")
        for c in self.chosen_classes:
            if self.all_classes and c not in self.all_classes:
                raise DataError(f"{c!r} is not a class of {self.name}; its classes are {list(self.all_classes)}")

    def check_bands(self, sensor: str, bands: Sequence[str], key: str) -> None:
        """``bands`` are distinct bands of ``sensor`` (``key`` names the config entry they came from)."""
        for b in bands:
            if b not in self.sensors[sensor].bands:
                raise DataError(
                    f"{b!r} is not a band of {self.name} {sensor}; its bands are {list(self.sensors[sensor].bands)}"
                )
        if len(set(bands)) != len(bands) or not bands:
            raise DataError(f"{key}={list(bands)} must list distinct bands, at least one")

    def check_root(self, modalities: list[str] | None = None) -> None:
        """The root (and, in subclasses, the folders of ``modalities``, default all) exist."""
        if not self.root.is_dir():
            raise MissingDataError(
                f"{self.name}: data.root {str(self.root)!r} does not exist or is not a folder. Expected layout:\n{self.layout}"
            )

    # -- interface -----------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        return self.chosen_classes or list(self.classes)

    def bands_of(self, sensor: str) -> tuple[str, ...]:
        chosen = self.bands.get(sensor)
        return tuple(chosen) if chosen else self.sensors[sensor].bands

    def out_size(self, sensor: str) -> int:
        return self.resize or self.sensors[sensor].size

    def pixel_size_m(self, sensor: str) -> float | None:
        """Metres per pixel of the patches delivered for ``sensor`` (``data.resize`` coarsens them)."""
        if self.ground_sampling_m is None:
            return None
        return self.ground_sampling_m * self.sensors[sensor].size / self.out_size(sensor)

    def native_size(self, side: int) -> tuple[int, int] | None:
        """The H x W a file must have (``side`` x ``side``), or ``None`` under ``data.resize``, which
        resamples every patch, whatever its size, to ``data.resize`` x ``data.resize``."""
        return None if self.resize else (side, side)

    def scan_options(self) -> dict[str, Any]:
        """Options that change the scan result (besides the files)."""
        return {}

    def scan_inputs(self) -> list[str]:
        """Root-relative files whose (name, size, mtime) fingerprint the scan (cheap: listing only)."""
        raise NotImplementedError

    def scan(self) -> ScanResult:
        raise NotImplementedError

    def read(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        """Decode one patch: ``C x S x S`` array in the sensor's store dtype + the files it came from."""
        raise NotImplementedError

    def paths(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> list[Path]:
        """The files :meth:`read` opens for this patch (recorded for skipped patches too)."""
        rel = scene.files.get(sensor)
        return [self.root / rel] if rel else []

    def published_stats(self, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        s = self.sensors[sensor]
        missing = [b for b in bands if b not in s.mean]
        if missing:
            raise DataError(
                f"{self.name} {sensor}: no published statistics for band(s) {missing}; "
                "use data.normalization=train (statistics of the institution's own training split)"
            )
        return (
            np.array([s.mean[b] for b in bands], dtype=np.float32),
            np.array([s.std[b] for b in bands], dtype=np.float32),
        )


def cache_root(d: DataConfig, source: RealSource) -> Path:
    return Path(d.cache_dir).expanduser() if d.cache_dir else source.root / ".uml_fed_cache"


def build_real(
    d: DataConfig,
    seed: int,
    specs: list[InstitutionSpec],
    only: str | None = None,
    force: bool = False,
    load: bool = True,
) -> tuple[list[Institution], dict[str, Any]]:
    """Load (building caches where missing or stale) the raw, un-normalised institutions of ``specs``
    (or just ``only``) + a report.

    ``force`` rebuilds every cache; ``load=False`` only makes sure the caches exist (no arrays kept).
    """
    wanted = {s.name for s in find(specs, only)}
    report: dict[str, Any] = {"source": d.source, "root": str(d.root), "institutions": {}}
    out: list[Institution] = []
    for root, group in specs_by_root(d, specs).items():
        mine = [s for s in group if s.name in wanted]
        if mine:
            source = make_source(d, root, modalities=list(dict.fromkeys(s.sensor for s in group)))
            if not source.coregistered:
                group = [s for s in group if s.sensor in {m.sensor for m in mine}]
            out += _build_root(d, seed, source, group, mine, force, load, report)
    return out, report


def _build_root(
    d: DataConfig, seed: int, source: RealSource, group: list[InstitutionSpec], mine: list[InstitutionSpec],
    force: bool, load: bool, report: dict[str, Any],
) -> list[Institution]:  # fmt: skip
    source.check_root(sorted({s.sensor for s in mine}))  # a node needs only its own sensor's files
    croot = cache_root(d, source)
    t0 = time.perf_counter()
    scan = load_scan(source, croot, report)
    report["scan_seconds"] = round(time.perf_counter() - t0, 3)
    report["excluded"] = scan.excluded
    report["scan_counts"] = scan.counts
    units = allocation_units(group)
    plan = allocate(
        scan.scenes, source.class_names(), units, {u: d.split_sizes(u) for u, _ in units}, seed=seed,
        paired=bool(d.paired), short_class=d.short_class, source=source.name, coregistered=source.coregistered,
    )  # fmt: skip
    report["classes"] = plan.classes
    report["notes"] = list(plan.notes)
    parts: dict[str, list[dict[str, list[str]]]] = {}
    out = []
    for spec in mine:
        unit, rows = unit_of(spec), None
        if spec.part >= 0:
            if unit not in parts:
                parts[unit] = _partition(plan, unit, [s.name for s in group if unit_of(s) == unit], d, seed)
            rows = parts[unit][spec.part]
        options = _cache_options(d, seed, source, spec, plan, rows)
        entry = InstitutionCache(croot / source.name / f"{spec.name}-{digest(options)[:12]}")
        t1 = time.perf_counter()
        state = "reused"
        if force or not entry.is_fresh(options, source.root):
            state = "built"
            decoded, files, skipped = _decode(source, spec, plan, rows, skip=bool(d.skip_unreadable), seed=seed)
            entry.write(decoded, options, files, skipped, source.root)
        skipped_ids = [x["id"] for x in entry.manifest().get("skipped", [])]
        if state == "reused" and skipped_ids:  # still said on every load, never silent
            warnings.warn(
                f"institution {spec.name!r}: {len(skipped_ids)} unreadable patch(es) were skipped when its cache was "
                f"built: {skipped_ids[:10]}{' ...' if len(skipped_ids) > 10 else ''}",
                stacklevel=3,
            )
        loaded = entry.load()
        columns = source.meta_columns
        splits = {
            name: Split(
                np.asarray(imgs, dtype=np.float32) if load else imgs[:0], np.asarray(labels, dtype=np.int64), list(ids),
                {c: [plan.scenes[i].meta.get(c, "") for i in ids] for c in columns},
            )
            for name, (imgs, labels, ids) in loaded.items()
        }  # fmt: skip
        if load:
            out.append(
                Institution(
                    spec.name,
                    list(spec.bands),
                    list(plan.classes),
                    splits,
                    source=source.name,
                    modality=spec.modality,
                    pixel_size_m=source.pixel_size_m(spec.sensor),
                )  # fmt: skip
            )
        report["institutions"][spec.name] = {
            "modality": spec.modality, "part": spec.part, "cache": state, "cache_dir": str(entry.dir),
            "cache_bytes": entry.nbytes(), "seconds": round(time.perf_counter() - t1, 3),
            "skipped": entry.manifest().get("skipped", []),
            "shape": {s: list(loaded[s][0].shape) for s in SPLITS},
            "counts": {s: {c: int((splits[s].labels == i).sum()) for i, c in enumerate(plan.classes)} for s in SPLITS},
        }  # fmt: skip
    return out


def _cache_options(
    d: DataConfig, seed: int, source: RealSource, spec: InstitutionSpec, plan: Plan, rows: dict[str, list[str]] | None
) -> dict[str, Any]:
    """Everything the decoded arrays depend on (an unpartitioned institution keeps its pre-partition key)."""
    unit = unit_of(spec)
    options = {
        "format": CACHE_FORMAT, "source": source.name, "root": str(source.root.resolve()), "institution": spec.name,
        "modality": spec.modality, "bands": list(spec.bands), "size": source.out_size(spec.sensor),
        "store": source.sensors[spec.sensor].store, "scan": source.scan_options(), "classes": plan.classes,
        "seed": seed, "paired": bool(d.paired), "sizes": list(d.split_sizes(unit)),
        "allocation": digest(plan.pools[unit]), "need": plan.need[unit],
    }  # fmt: skip
    if spec.sensor != spec.modality:
        options["sensor"] = spec.sensor
    if rows is not None:
        options.update(partition=[d.partition.method, d.partition.alpha, d.partition.column], rows=digest(rows))
    return options


def _pool_rows(plan: Plan, unit: str) -> list[tuple[str, int, str]]:
    """The pool's needed scenes as rows (scene id, class index, split), class by class (no spares)."""
    rows = []
    for ci, c in enumerate(plan.classes):
        queue, pos = plan.pools[unit][c], 0
        for split, want in zip(SPLITS, plan.need[unit][c]):
            rows += [(sid, ci, split) for sid in queue[pos : pos + want]]
            pos += want
    return rows


def _partition(plan: Plan, unit: str, names: list[str], d: DataConfig, seed: int) -> list[dict[str, list[str]]]:
    """Each institution's scene ids per split, cut from the pool ``unit`` (the same on every node)."""
    rows = _pool_rows(plan, unit)
    ids = [r[0] for r in rows]
    meta = {d.partition.column: [plan.scenes[i].meta.get(d.partition.column) for i in ids]}
    by_part = split_parts(
        Pool(unit, np.array([r[1] for r in rows]), [r[2] for r in rows], meta), d.partition, seed, names
    )
    return [{s: [ids[i] for i in idx] for s, idx in part.items()} for part in by_part]


def _read(
    source: RealSource, spec: InstitutionSpec, scene: Scene, skip: bool, skipped: list, files: set
) -> np.ndarray | None:
    """One patch, or ``None`` when it is unreadable and ``skip`` is set (recorded in ``skipped``)."""
    try:
        arr, used = source.read(scene, spec.sensor, spec.bands)
    except DataError as e:
        if not skip:
            raise
        warnings.warn(f"skipping unreadable patch {scene.id} ({spec.name}): {e}", stacklevel=4)
        skipped.append({"id": scene.id, "error": str(e)})
        files.update(_rel(source.root, p) for p in source.paths(scene, spec.sensor, spec.bands))
        return None
    files.update(_rel(source.root, p) for p in used)
    return arr


def _decode(
    source: RealSource, spec: InstitutionSpec, plan: Plan, rows: dict[str, list[str]] | None, skip: bool, seed: int
):
    """Read the institution's patches: its own pool class by class and split by split (unreadable
    ones replaced by the pool's spares), or, for a part of a partitioned pool, its rows (unreadable
    ones dropped: spares would differ from node to node)."""
    files: set[str] = set()
    skipped: list[dict[str, str]] = []
    out: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {s: ([], [], []) for s in SPLITS}
    store, size = source.sensors[spec.sensor].store, source.out_size(spec.sensor)
    total = sum(len(r) for r in rows.values()) if rows is not None else sum(map(sum, plan.need[spec.name].values()))
    check_fits(
        f"institution {spec.name!r}: {total} patches of {size} x {size} px",
        (total, len(spec.bands), size, size),
        2 * np.dtype(store).itemsize,  # the patches as read, then stacked
        "set data.resize=<side> to a smaller size, or lower the split sizes",
    )

    def take(split: str, sid: str) -> bool:
        scene = plan.scenes[sid]
        arr = _read(source, spec, scene, skip, skipped, files)
        if arr is not None:
            imgs, labels, ids = out[split]
            imgs.append(arr)
            labels.append(plan.classes.index(scene.label))
            ids.append(sid)
        return arr is not None

    if rows is not None:
        for split in SPLITS:
            for sid in rows[split]:
                take(split, sid)
    else:
        for c in plan.classes:
            queue, pos = plan.pools[spec.name][c], 0
            for split, want in zip(SPLITS, plan.need[spec.name][c]):
                got = 0
                while got < want:
                    if pos >= len(queue):
                        raise DataError(
                            f"institution {spec.name!r} class {c!r}: only {got} readable scenes left for the {split!r} "
                            f"split, {want} needed ({len(skipped)} unreadable patches skipped so far)"
                        )
                    got += take(split, queue[pos])
                    pos += 1
    splits = {}
    for s, (imgs, labels, ids) in out.items():
        order = seeded_order(ids, seed, s)  # the cache stores every split in its canonical, shuffled order
        arr = (
            np.stack([imgs[i] for i in order]).astype(store, copy=False)
            if imgs
            else np.zeros((0, len(spec.bands), size, size), store)
        )
        splits[s] = (arr, np.asarray(labels, dtype=np.int64)[order], [ids[i] for i in order])
    return splits, sorted(files), skipped


def _rel(root: Path, p: str | Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


def normalize(d: DataConfig, insts: list[Institution], specs: list[InstitutionSpec]) -> list[Institution]:
    """Z-score with the own training split's stats (default) or the published ones."""
    if d.normalization != "published":
        return [normalize_institution(inst, constant_bands=d.constant_bands) for inst in insts]
    source = make_source(d)
    by_name = {s.name: s for s in specs}
    for inst in insts:
        spec = by_name[inst.name]
        normalize_institution(inst, *source.published_stats(spec.sensor, spec.bands), constant_bands=d.constant_bands)
    return insts


def scene_ids(insts: list[Institution]) -> dict[str, set[str]]:
    """All scene ids per institution (for the unpaired check)."""
    return {i.name: {sid for s in i.splits.values() for sid in s.ids} for i in insts}
