"""Real Earth-observation archives -> one :class:`~uml_fed.data.base.Institution` per modality.

Pipeline (``load_real``):

1. the data config is validated against the source's band names, classes and options (no I/O);
2. the archive is *scanned* once: every single-label scene with the files of each modality it has
   (the scan is cached, keyed by the label files' names, sizes and mtimes);
3. :func:`uml_fed.data.subsets.allocate` gives every institution its own class-balanced pool of
   scenes -- disjoint across institutions (unpaired) unless ``data.paired`` is set;
4. each institution's patches are decoded once into a compact ``.npy`` cache
   (:mod:`uml_fed.data.cache`); later calls read the cache only, never the GeoTIFFs;
5. arrays are z-scored with per-band statistics (own train split, or the published ones).

Sources: ``bigearthnet_v1``, ``bigearthnet_v2`` (:mod:`.bigearthnet`), ``sen12ms`` (:mod:`.sen12ms`),
``eurosat`` (:mod:`.eurosat`) and ``folder`` (:mod:`.folder`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from .base import SPLITS, DataError, Institution, Split, normalize_institution, seeded_order

if TYPE_CHECKING:
    from ..config import DataConfig

CACHE_FORMAT = 2  # 2: splits stored in their seeded shuffled order; bump when the decoded content of a cache changes for the same options


class MissingDataError(DataError, FileNotFoundError):
    """A dataset root, band file or label file is absent; the message names the path and the layout."""


# ---------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensor:
    """One modality of a source: band names in canonical order, on-disk dtype, output side, stats."""

    bands: tuple[str, ...]
    dtype: str | None  # expected on-disk dtype (None = any, converted to float32)
    size: int  # output patch side in pixels (before data.resize)
    store: str = "float32"  # dtype the decode-once cache keeps
    mean: dict[str, float] = field(default_factory=dict)  # published per-band mean (raw units)
    std: dict[str, float] = field(default_factory=dict)  # published per-band std


@dataclass(frozen=True)
class Scene:
    """One place on the ground: the unit that must not be shared by two institutions (unpaired)."""

    id: str
    label: str
    files: dict[str, str]  # modality -> path relative to the root (a patch folder or a file)


@dataclass
class ScanResult:
    scenes: list[Scene]
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> number of scenes left out


@dataclass(frozen=True)
class InstitutionSpec:
    name: str
    modality: str
    bands: tuple[str, ...]


class RealSource:
    """Base class of the archive readers (torchgeo style: bands and statistics are class attributes).

    Subclasses set ``name``, ``sensors``, ``classes`` (default, the paper's), ``all_classes``
    (the nomenclature) and ``layout``, and implement :meth:`scan_inputs`, :meth:`scan` and
    :meth:`read`.  Arguments are validated in ``__init__`` before any I/O.
    """

    name: str = ""
    coregistered: bool = True  # every scene has every modality (the archives): allocation ignores file presence
    sensors: dict[str, Sensor] = {}
    classes: tuple[str, ...] = ()
    all_classes: tuple[str, ...] = ()
    layout: str = ""

    def __init__(self, cfg: "DataConfig") -> None:
        self.cfg = cfg
        if not cfg.root:
            raise MissingDataError(
                f"{self.name}: data.root is not set; pass data.root=/path/to/the/archive. Expected layout:\n{self.layout}"
            )
        self.root = Path(str(cfg.root)).expanduser()
        self.validate()

    # -- validation (no I/O) -------------------------------------------------------------------------
    def validate(self) -> None:
        d = self.cfg
        for m in d.modalities:
            if m not in self.sensors:
                raise DataError(f"{m!r} is not a modality of {self.name}; choose from {sorted(self.sensors)}")
        for m, bands in dict(d.bands).items():
            if m not in self.sensors:
                raise DataError(f"data.bands names {m!r}, which is not a modality of {self.name} ({sorted(self.sensors)})")
            for b in bands:
                if b not in self.sensors[m].bands:
                    raise DataError(f"{b!r} is not a band of {self.name} {m}; its bands are {list(self.sensors[m].bands)}")
            if len(set(bands)) != len(bands) or not bands:
                raise DataError(f"data.bands.{m}={list(bands)} must list distinct bands, at least one")
        for c in d.classes:
            if self.all_classes and c not in self.all_classes:
                raise DataError(f"{c!r} is not a class of {self.name}; its classes are {list(self.all_classes)}")
        if d.normalization not in ("train", "published"):
            raise DataError(f"data.normalization={d.normalization!r} must be 'train' or 'published'")
        short = getattr(d, "short_class", "raise")
        if short not in ("raise", "shrink", "drop"):
            raise DataError(f"data.short_class={short!r} must be 'raise', 'shrink' or 'drop'")
        if getattr(d, "resize", 0) < 0:
            raise DataError(f"data.resize={d.resize} must be >= 0 (0 = native patch size)")

    def check_root(self, modalities: list[str] | None = None) -> None:
        """The root (and, in subclasses, the folders of ``modalities``, default all) exist."""
        if not self.root.is_dir():
            raise MissingDataError(
                f"{self.name}: data.root {str(self.root)!r} does not exist or is not a folder. Expected layout:\n{self.layout}"
            )

    # -- interface -----------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        return list(self.cfg.classes) or list(self.classes)

    def bands_of(self, modality: str) -> tuple[str, ...]:
        chosen = dict(self.cfg.bands).get(modality)
        return tuple(chosen) if chosen else self.sensors[modality].bands

    def out_size(self, modality: str) -> int:
        return int(getattr(self.cfg, "resize", 0) or self.sensors[modality].size)

    def scan_options(self) -> dict[str, Any]:
        """Options that change the scan result (besides the files)."""
        return {}

    def scan_inputs(self) -> list[str]:
        """Root-relative files whose (name, size, mtime) fingerprint the scan (cheap: listing only)."""
        raise NotImplementedError

    def scan(self) -> ScanResult:
        raise NotImplementedError

    def read(self, scene: Scene, modality: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        """Decode one patch: ``C x S x S`` array in the sensor's store dtype + the files it came from."""
        raise NotImplementedError

    def paths(self, scene: Scene, modality: str, bands: tuple[str, ...]) -> list[Path]:
        """The files :meth:`read` opens for this patch (recorded for skipped patches too)."""
        rel = scene.files.get(modality)
        return [self.root / rel] if rel else []

    def published_stats(self, modality: str, bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        s = self.sensors[modality]
        missing = [b for b in bands if b not in s.mean]
        if missing:
            raise DataError(
                f"{self.name} {modality}: no published statistics for band(s) {missing}; "
                "use data.normalization=train (statistics of the institution's own training split)"
            )
        return (
            np.array([s.mean[b] for b in bands], dtype=np.float32),
            np.array([s.std[b] for b in bands], dtype=np.float32),
        )


def source_class(name: str) -> type[RealSource]:
    if name == "bigearthnet_v1":
        from .bigearthnet import BigEarthNetV1

        return BigEarthNetV1
    if name == "bigearthnet_v2":
        from .bigearthnet import BigEarthNetV2

        return BigEarthNetV2
    if name == "sen12ms":
        from .sen12ms import SEN12MS

        return SEN12MS
    if name == "eurosat":
        from .eurosat import EuroSAT

        return EuroSAT
    if name == "folder":
        from .folder import FolderSource

        return FolderSource
    raise DataError(
        f"data.source={name!r} is not a known source; choose synthetic, bigearthnet_v1, bigearthnet_v2, "
        "sen12ms, eurosat or folder"
    )


def make_source(cfg: "DataConfig") -> RealSource:
    return source_class(cfg.source)(cfg)


# ---------------------------------------------------------------------------------------------------
# Raster reading helpers (shared by the sources)
# ---------------------------------------------------------------------------------------------------


def read_raster(
    path: Path,
    *,
    what: str,
    indexes: list[int] | None = None,
    count: int | None = None,
    dtype: str | None = None,
    native: tuple[int, int] | None = None,
    out_size: int | None = None,
) -> np.ndarray:
    """Read bands ``indexes`` (1-based) of one raster as ``C x H x W``, validating it first.

    ``count``/``dtype``/``native`` are what the format promises (band count, dtype, H x W); a
    mismatch, an unreadable file or non-finite pixels raise :class:`DataError` naming the file.
    ``out_size`` resamples bilinearly (GDAL) to ``out_size x out_size``.
    """
    if not path.is_file():
        raise MissingDataError(f"{what}: file {str(path)!r} is missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as f:
                if count is not None and f.count != count:
                    raise DataError(f"{what}: {str(path)!r} has {f.count} bands, expected {count}")
                if dtype is not None and f.dtypes[0] != dtype:
                    raise DataError(f"{what}: {str(path)!r} has dtype {f.dtypes[0]}, expected {dtype}")
                if native is not None and (f.height, f.width) != tuple(native):
                    raise DataError(
                        f"{what}: {str(path)!r} is {f.height}x{f.width} pixels, expected {native[0]}x{native[1]}"
                    )
                idx = indexes or list(range(1, f.count + 1))
                if max(idx) > f.count:
                    raise DataError(f"{what}: {str(path)!r} has {f.count} bands, band {max(idx)} was requested")
                if out_size is not None and (f.height, f.width) != (out_size, out_size):
                    arr = f.read(idx, out_shape=(len(idx), out_size, out_size), resampling=Resampling.bilinear)
                else:
                    arr = f.read(idx)
    except RasterioError as e:
        raise DataError(f"{what}: cannot read {str(path)!r} (corrupt or not a raster): {e}") from e
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{what}: {str(path)!r} has {bad} NaN/inf pixel values")
    return arr


def raster_count(path: Path, what: str) -> int:
    """Band count of a raster (header only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as f:
                return int(f.count)
    except RasterioError as e:
        raise DataError(f"{what}: cannot read {str(path)!r} (corrupt or not a raster): {e}") from e


# ---------------------------------------------------------------------------------------------------
# Config -> institutions
# ---------------------------------------------------------------------------------------------------


def institution_specs(cfg: "DataConfig", source: RealSource | None = None) -> list[InstitutionSpec]:
    """Bimodal: one institution per modality; ``per_band``: one per band, named ``<modality>_<band>``."""
    src = source or make_source(cfg)
    out: list[InstitutionSpec] = []
    for m in cfg.modalities:
        bands = src.bands_of(m)
        if cfg.per_band:
            out.extend(InstitutionSpec(f"{m}_{b}", m, (b,)) for b in bands)
        else:
            out.append(InstitutionSpec(m, m, bands))
    return out


def real_institution_names(cfg: "DataConfig") -> list[str]:
    """Institution names in order, without reading any pixels."""
    return [s.name for s in institution_specs(cfg)]


def cache_root(cfg: "DataConfig", source: RealSource) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else source.root / ".uml_fed_cache"


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def load_scan(source: RealSource, cache_dir: Path, report: dict | None = None) -> ScanResult:
    """The source's scan, from ``<cache>/<source>/scan-*.json`` when its inputs are unchanged."""
    from .cache import file_stats, read_json, write_json

    inputs = source.scan_inputs()
    key = {
        "format": CACHE_FORMAT,
        "source": source.name,
        "root": str(source.root.resolve()),
        "options": source.scan_options(),
        "inputs": file_stats(source.root, inputs),
    }
    digest = _hash(key)
    path = cache_dir / source.name / f"scan-{_hash([key['root'], key['options']])[:10]}.json"
    cached = read_json(path)
    if cached is not None and cached.get("digest") == digest:
        if report is not None:
            report["scan"] = "reused"
        return ScanResult(
            [Scene(s[0], s[1], dict(s[2])) for s in cached["scenes"]], dict(cached.get("excluded", {}))
        )
    result = source.scan()
    write_json(
        path,
        {
            "digest": digest,
            "source": source.name,
            "excluded": result.excluded,
            "scenes": [[s.id, s.label, s.files] for s in result.scenes],
        },
    )
    if report is not None:
        report["scan"] = "built"
    return result


def build_real(
    cfg: "DataConfig", seed: int, only: str | None = None, force: bool = False, load: bool = True
) -> tuple[list[Institution], dict[str, Any]]:
    """Load (building caches where missing or stale) the raw, un-normalised institutions + a report.

    ``force`` rebuilds every cache; ``load=False`` only makes sure the caches exist (no arrays kept).
    """
    from . import cache as cache_mod
    from .subsets import allocate

    source = make_source(cfg)
    specs = institution_specs(cfg, source)
    wanted = [s for s in specs if only is None or s.name == only]
    report: dict[str, Any] = {"source": source.name, "root": str(source.root), "institutions": {}}
    if not wanted:
        return [], report
    source.check_root(sorted({s.modality for s in wanted}))  # a node needs only its own modality's files
    croot = cache_root(cfg, source)
    t0 = time.perf_counter()
    scan = load_scan(source, croot, report)
    report["scan_seconds"] = round(time.perf_counter() - t0, 3)
    report["excluded"] = scan.excluded
    classes = source.class_names()
    plan = allocate(
        scan.scenes,
        classes,
        [(s.name, s.modality) for s in specs],
        {s.name: cfg.split_sizes(s.name) for s in specs},
        seed=seed,
        paired=bool(cfg.paired),
        short_class=getattr(cfg, "short_class", "raise"),
        source=source.name,
        coregistered=source.coregistered,
    )
    report["classes"] = plan.classes
    report["notes"] = list(plan.notes)
    out: list[Institution] = []
    for spec in wanted:
        options = {
            "format": CACHE_FORMAT,
            "source": source.name,
            "root": str(source.root.resolve()),
            "institution": spec.name,
            "modality": spec.modality,
            "bands": list(spec.bands),
            "size": source.out_size(spec.modality),
            "store": source.sensors[spec.modality].store,
            "scan": source.scan_options(),
            "classes": plan.classes,
            "seed": seed,
            "paired": bool(cfg.paired),
            "sizes": list(cfg.split_sizes(spec.name)),
            "allocation": _hash(plan.pools[spec.name]),
            "need": plan.need[spec.name],
        }
        entry = cache_mod.InstitutionCache(croot / source.name / f"{spec.name}-{_hash(options)[:12]}")
        t1 = time.perf_counter()
        state = "reused"
        if force or not entry.is_fresh(options, source.root):
            state = "built"
            splits, files, skipped = _decode(source, spec, plan, skip=bool(cfg.skip_unreadable), seed=seed)
            entry.write(splits, options, files, skipped, source.root)
        skipped_ids = [x["id"] for x in entry.manifest().get("skipped", [])]
        if state == "reused" and skipped_ids:  # still said on every load, never silent
            warnings.warn(
                f"institution {spec.name!r}: {len(skipped_ids)} unreadable patch(es) were skipped when its cache was "
                f"built: {skipped_ids[:10]}{' ...' if len(skipped_ids) > 10 else ''}",
                stacklevel=2,
            )
        loaded = entry.load()
        if load:
            splits = {
                name: Split(np.asarray(imgs, dtype=np.float32), np.asarray(labels, dtype=np.int64), list(ids))
                for name, (imgs, labels, ids) in loaded.items()
            }
            out.append(Institution(spec.name, list(spec.bands), list(plan.classes), splits, source=source.name))
        else:
            splits = {name: Split(imgs[:0], labels, list(ids)) for name, (imgs, labels, ids) in loaded.items()}
        report["institutions"][spec.name] = {
            "cache": state,
            "cache_dir": str(entry.dir),
            "cache_bytes": entry.nbytes(),
            "seconds": round(time.perf_counter() - t1, 3),
            "skipped": entry.manifest().get("skipped", []),
            "shape": {s: list(loaded[s][0].shape) for s in SPLITS},
            "counts": {
                s: {c: int((splits[s].labels == i).sum()) for i, c in enumerate(plan.classes)} for s in SPLITS
            },
        }
    return out, report


def _decode(source: RealSource, spec: InstitutionSpec, plan: Any, skip: bool, seed: int):
    """Read the institution's patches class by class, split by split, from its own scene pool."""
    need = plan.need[spec.name]
    pools = plan.pools[spec.name]
    by_id = plan.scenes
    files: set[str] = set()
    skipped: list[dict[str, str]] = []
    out: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {s: ([], [], []) for s in SPLITS}
    for ci, c in enumerate(plan.classes):
        queue = list(pools[c])
        pos = 0
        for si, split in enumerate(SPLITS):
            want = need[c][si]
            got = 0
            while got < want:
                if pos >= len(queue):
                    raise DataError(
                        f"institution {spec.name!r} class {c!r}: only {got} readable scenes left for the {split!r} "
                        f"split, {want} needed ({len(skipped)} unreadable patches skipped so far)"
                    )
                sid = queue[pos]
                pos += 1
                scene = by_id[sid]
                try:
                    arr, used = source.read(scene, spec.modality, spec.bands)
                except DataError as e:
                    if not skip:
                        raise
                    warnings.warn(f"skipping unreadable patch {sid} ({spec.name}): {e}", stacklevel=2)
                    skipped.append({"id": sid, "error": str(e)})
                    files.update(_rel(source.root, p) for p in source.paths(scene, spec.modality, spec.bands))
                    continue
                files.update(_rel(source.root, p) for p in used)
                out[split][0].append(arr)
                out[split][1].append(ci)
                out[split][2].append(sid)
                got += 1
    splits = {}
    store = source.sensors[spec.modality].store
    size = source.out_size(spec.modality)
    for s, (imgs, labels, ids) in out.items():
        order = seeded_order(ids, seed, s)  # the cache stores every split in its canonical, shuffled order
        arr = np.stack([imgs[i] for i in order]).astype(store, copy=False) if imgs else np.zeros((0, len(spec.bands), size, size), store)
        splits[s] = (arr, np.asarray(labels, dtype=np.int64)[order], [ids[i] for i in order])
    return splits, sorted(files), skipped


def _rel(root: Path, p: str | Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


def normalize(cfg: "DataConfig", insts: list[Institution]) -> list[Institution]:
    """Z-score with the own training split's stats (default) or the published ones."""
    if cfg.normalization == "published":
        source = make_source(cfg)
        specs = {s.name: s for s in institution_specs(cfg, source)}
        for inst in insts:
            spec = specs[inst.name]
            mean, std = source.published_stats(spec.modality, spec.bands)
            normalize_institution(inst, mean, std)
    else:
        for inst in insts:
            normalize_institution(inst)
    return insts


def load_real(cfg: "DataConfig", seed: int = 0, only: str | None = None) -> list[Institution]:
    """Every institution of a real source (or just ``only``), decoded once, normalised."""
    insts, _ = build_real(cfg, seed, only=only)
    return normalize(cfg, insts)


def scene_ids(insts: list[Institution]) -> dict[str, set[str]]:
    """All scene ids per institution (for the unpaired check)."""
    return {i.name: {sid for s in i.splits.values() for sid in s.ids} for i in insts}


__all__ = [
    "MissingDataError",
    "RealSource",
    "Scene",
    "ScanResult",
    "Sensor",
    "build_real",
    "institution_specs",
    "load_real",
    "make_source",
    "read_raster",
    "real_institution_names",
    "scene_ids",
]
