"""Seeded writers of tiny archives in each source's EXACT on-disk layout (used by the tests and the benchmark).

Real GeoTIFFs (CRS + transform via ``from_origin``), the real dtypes (uint16 S2, float32 dB S1,
uint8 jpg), band counts, native sizes (BigEarthNet 20/60/120 px per band), file names and label
files (JSON, parquet, pkl).  Pixel content is class dependent -- every band has a class-specific
level (a seeded permutation of the classes per band) and every class a spatial frequency -- plus
noise, so a short training can learn from it.  ``scale`` multiplies ``per_class`` for benchmarks.

Every writer returns ``{"root": str, "labels": {scene id: class}, ...}``; the archive writers also
``"meta": {scene id: {column: value}}``, the scene metadata the reader should find (natural partitions).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from .bigearthnet import CLOUD_LIST, CORINE_TO_19, S2_BANDS, S2_NATIVE, SNOW_LIST
from .bigearthnet import PAPER_CLASSES as BEN_CLASSES
from .eurosat import CLASSES as EUROSAT_CLASSES
from .eurosat import MS_FILE_ORDER
from .sen12ms import IGBP_FULL, SEASONS
from .sen12ms import PAPER_CLASSES as SEN12MS_CLASSES

UTM33 = "EPSG:32633"


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """rasterio.transform.from_origin without its matmul deprecation warning."""
    return Affine.translation(west, north) @ Affine.scale(xsize, -ysize)


class _Signal:
    """Class-dependent pixels: a per-(band, class) level and a per-class texture frequency."""

    def __init__(self, n_classes: int, n_bands: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.rank = np.stack([self.rng.permutation(n_classes) for _ in range(n_bands)]) / max(n_classes - 1, 1)
        self.freq = 1.0 + np.arange(n_classes) * 0.75

    def field(self, c: int, b: int, size: int) -> np.ndarray:
        """Values roughly in [0, 1]: level of (band, class) modulated by the class texture + noise."""
        yy, xx = np.mgrid[0:size, 0:size] / size
        phase = self.rng.uniform(0, 2 * np.pi)
        tex = np.sin(2 * np.pi * self.freq[c] * xx + phase) * np.cos(2 * np.pi * self.freq[c] * yy)
        level = 0.15 + 0.7 * self.rank[b, c]
        return level + 0.08 * tex + self.rng.normal(0, 0.04, (size, size))


def _block_mean(a: np.ndarray, side: int) -> np.ndarray:
    f = a.shape[-1] // side
    return a.reshape(side, f, side, f).mean(axis=(1, 3))


def write_geotiff(path: Path, data: np.ndarray, crs: str | None, transform=None, nodata: float | None = None) -> None:
    """``C x H x W`` (or ``H x W``) array -> GeoTIFF with CRS and transform (and a nodata value, if given)."""
    data = data[None] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype.name
    )
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile.update(nodata=nodata)
    with rasterio.open(path, "w", **profile) as f:
        f.write(data)


def _write_image(path: Path, data: np.ndarray, driver: str) -> None:
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver=driver,
            height=data.shape[1],
            width=data.shape[2],
            count=data.shape[0],
            dtype=data.dtype.name,
        ) as f:
            f.write(data)
    aux = path.with_name(path.name + ".aux.xml")
    if aux.exists():
        aux.unlink()


def _s2_uint16(sig: _Signal, c: int, b: int, size: int) -> np.ndarray:
    return np.clip(sig.field(c, b, size) * 6000, 0, 10000).astype(np.uint16)


def _s1_db(sig: _Signal, c: int, b: int, size: int, offset: float) -> np.ndarray:
    return (offset - 14.0 + 18.0 * sig.field(c, b, size)).astype(np.float32)


def _assign(classes: list[str], per_class: int) -> list[int]:
    return [c for c in range(len(classes)) for _ in range(per_class)]


# --------------------------------------------------------------------------------------------- BigEarthNet


def _ben_s2_bands(folder: Path, name: str, sig: _Signal, c: int, ulx: float, uly: float) -> None:
    for b, band in enumerate(S2_BANDS):
        full = _s2_uint16(sig, c, b, 120).astype(np.float64)
        side = S2_NATIVE[band]
        arr = _block_mean(full, side).astype(np.uint16)
        res = 1200 / side
        write_geotiff(folder / f"{name}_{band}.tif", arr, UTM33, from_origin(ulx, uly, res, res))


def _ben_s1_bands(folder: Path, name: str, sig: _Signal, c: int, ulx: float, uly: float) -> None:
    for b, (band, off) in enumerate((("VV", 0.0), ("VH", -7.0))):
        arr = _s1_db(sig, c, len(S2_BANDS) + b, 120, off)
        write_geotiff(folder / f"{name}_{band}.tif", arr, UTM33, from_origin(ulx, uly, 10, 10))


@dataclass
class _BenScene:
    """One scene of a BigEarthNet fixture: its index, kind (None = single-label), class, grid cell,
    group (tile or country) and upper-left corner."""

    i: int
    kind: str | None
    c: int
    row: int
    col: int
    group: str
    ulx: float
    uly: float


def _ben_scenes(
    classes: Sequence[str], per_class: int, multi_label: int, snow: int, cloud: int, groups: Sequence[str],
    rng: np.random.Generator,
) -> list[_BenScene]:  # fmt: skip
    """``per_class`` single-label scenes per class, then ``multi_label``/``snow``/``cloud`` extra ones (a
    random class each), on a 100-wide grid of 1200 m cells, taking turns in runs of three over ``groups``."""
    cls_idx = _assign(list(classes), per_class)
    extra = ["multi_label"] * multi_label + ["snow"] * snow + ["cloud"] * cloud
    out = []
    for i, kind in enumerate([None] * len(cls_idx) + extra):
        c = cls_idx[i] if kind is None else int(rng.integers(len(classes)))
        row, col = divmod(i, 100)
        out.append(
            _BenScene(
                i, kind, c, row, col, groups[(i // 3) % len(groups)], 300000.0 + 1200 * col, 5900000.0 - 1200 * row
            )
        )
    return out


def _corine_for(cls19: str, rng: np.random.Generator) -> list[str]:
    names = [k for k, v in CORINE_TO_19.items() if v == cls19]
    return [names[int(rng.integers(len(names)))]]


def write_bigearthnet_v1(
    root: str | Path,
    per_class: int = 4,
    classes: list[str] | tuple[str, ...] = BEN_CLASSES,
    seed: int = 0,
    scale: int = 1,
    multi_label: int = 2,
    snow: int = 1,
    cloud: int = 1,
    tiles: tuple[str, ...] = ("33UUP", "32TNS", "29SND"),
) -> dict:
    """BigEarthNet-MM v1: S2 + S1 patch folders with JSON labels, plus the snow/cloud exclusion lists.

    ``per_class * scale`` single-label scenes per class, ``multi_label`` extra two-class scenes, and
    ``snow``/``cloud`` extra scenes listed in the official exclusion CSVs.  Scenes take turns (in runs
    of three) over the MGRS ``tiles``, named in the S2 ``tile_source`` and the S1 patch name.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sig = _Signal(len(classes), len(S2_BANDS) + 2, seed)
    labels: dict[str, str] = {}
    excluded: dict[str, list[str]] = {"snow": [], "cloud": [], "multi_label": []}
    meta: dict[str, dict[str, str]] = {}
    for sc in _ben_scenes(classes, per_class * scale, multi_label, snow, cloud, tiles, rng):
        kind, c, row, col, tile, ulx, uly = sc.kind, sc.c, sc.row, sc.col, sc.group, sc.ulx, sc.uly
        s2 = f"S2A_MSIL2A_20170613T101031_{row}_{col}"
        s1 = f"S1A_IW_GRDH_1SDV_20170613T165043_{tile}_{row}_{col}"
        corine = _corine_for(classes[c], rng)
        if rng.random() < 0.3:  # an unmapped CORINE class next to the real one keeps the scene single-label
            corine.append("Road and rail networks and associated land")
        if kind == "multi_label":
            other = classes[(c + 1) % len(classes)]
            corine += _corine_for(other, rng)
        coords = {"ulx": ulx, "uly": uly, "lrx": ulx + 1200, "lry": uly - 1200}
        d2 = root / "BigEarthNet-v1.0" / s2
        _ben_s2_bands(d2, s2, sig, c, ulx, uly)
        meta2 = {"labels": corine, "coordinates": coords, "projection": 'PROJCS["WGS 84 / UTM zone 33N"]',
                 "tile_source": f"S2A_MSIL1C_20170613T101031_N0205_R022_T{tile}_20170613T101608.SAFE",
                 "acquisition_date": "2017-06-13 10:10:31"}  # fmt: skip
        (d2 / f"{s2}_labels_metadata.json").write_text(json.dumps(meta2))
        d1 = root / "BigEarthNet-S1-v1.0" / s1
        _ben_s1_bands(d1, s1, sig, c, ulx, uly)
        meta1 = {"labels": corine, "coordinates": {"ulx": ulx, "uly": uly, "lrx": ulx + 1200, "lly": uly - 1200},
                 "projection": 'PROJCS["WGS 84 / UTM zone 33N"]', "corresponding_s2_patch": s2,
                 "scene_source": "S1A_IW_GRDH_1SDV_20170613T165043_20170613T165108_017011_01C5D1_3F53",
                 "acquisition_time": "2017-06-13T16:50:43"}  # fmt: skip
        (d1 / f"{s1}_labels_metadata.json").write_text(json.dumps(meta1))
        if kind is None:
            labels[s2] = classes[c]
            meta[s2] = {"tile": tile}
        else:
            excluded[kind].append(s2)
    (root / SNOW_LIST).write_text("".join(f"{p}\n" for p in excluded["snow"]))
    (root / CLOUD_LIST).write_text("".join(f"{p}\n" for p in excluded["cloud"]))
    return {"root": str(root), "labels": labels, "excluded": excluded, "meta": meta}


def write_bigearthnet_v2(
    root: str | Path,
    per_class: int = 4,
    classes: list[str] | tuple[str, ...] = BEN_CLASSES,
    seed: int = 0,
    scale: int = 1,
    multi_label: int = 2,
    snow: int = 1,
    cloud: int = 1,
    countries: tuple[str, ...] = ("Austria", "Finland", "Portugal"),
) -> dict:
    """BigEarthNet v2.0: ``metadata.parquet`` + product/patch folders for S2 and S1; scenes take turns
    (in runs of three) over the ``countries`` of the parquet's ``country`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    rng = np.random.default_rng(seed)
    sig = _Signal(len(classes), len(S2_BANDS) + 2, seed)
    rows: dict[str, list] = {k: [] for k in ("patch_id", "labels", "split", "country", "s1_name", "s2v1_name",
                                             "contains_seasonal_snow", "contains_cloud_or_shadow")}  # fmt: skip
    labels: dict[str, str] = {}
    meta: dict[str, dict[str, str]] = {}
    for sc in _ben_scenes(classes, per_class * scale, multi_label, snow, cloud, countries, rng):
        i, kind, c, row, col, country, ulx, uly = sc.i, sc.kind, sc.c, sc.row, sc.col, sc.group, sc.ulx, sc.uly
        product = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
        pid = f"{product}_{row}_{col}"
        s1prod = "S1A_IW_GRDH_1SDV_20170613T165043"
        s1 = f"{s1prod}_33UUP_{row}_{col}"
        _ben_s2_bands(root / "BigEarthNet-S2" / product / pid, pid, sig, c, ulx, uly)
        _ben_s1_bands(root / "BigEarthNet-S1" / s1prod / s1, s1, sig, c, ulx, uly)
        labs = [classes[c]] + ([classes[(c + 1) % len(classes)]] if kind == "multi_label" else [])
        rows["patch_id"].append(pid)
        rows["labels"].append(labs)
        rows["split"].append(("train", "validation", "test")[i % 3])
        rows["country"].append(country)
        rows["s1_name"].append(s1)
        rows["s2v1_name"].append(f"S2A_MSIL2A_20170613T101031_{row}_{col}")
        rows["contains_seasonal_snow"].append(kind == "snow")
        rows["contains_cloud_or_shadow"].append(kind == "cloud")
        if kind is None:
            labels[pid] = classes[c]
            meta[pid] = {"country": country}
    pq.write_table(pa.table(rows), root / "metadata.parquet")
    return {"root": str(root), "labels": labels, "meta": meta}


# --------------------------------------------------------------------------------------------- SEN12MS


def write_sen12ms(
    root: str | Path,
    per_class: int = 4,
    classes: list[str] | tuple[str, ...] = SEN12MS_CLASSES,
    seed: int = 0,
    scale: int = 1,
    season: str = "summer",
    with_pkl: bool = True,
    size: int = 256,
    patches_per_scene: int = 5,
    lc_nodata: int | None = None,
) -> dict:
    """SEN12MS: ``<season>/{s1,s2,lc}_<scene>/...tif`` (+ ``IGBP_probability_labels.pkl``).

    The lc band 1 holds the class's IGBP code on ~70 % of the pixels and a random other code
    elsewhere, so the pkl fractions and the lc-derived ones agree.  ``size`` other than 256 writes a
    deliberately non-standard patch (tests of ``data.resize``).  ``lc_nodata`` (e.g. 255, MODIS's
    land-cover fill value) is declared as the lc rasters' nodata value and fills the top eighth of band 1;
    the pkl fractions then count the valid pixels only.  The returned ``"lc_nodata_pixels"`` is their total.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sig = _Signal(len(classes), 15, seed)
    sdir = SEASONS[season]
    probs: dict[str, np.ndarray] = {}
    labels: dict[str, str] = {}
    meta: dict[str, dict[str, str]] = {}
    nodata_pixels = 0
    for i, c in enumerate(_assign(list(classes), per_class * scale)):
        scene, patch = divmod(i, patches_per_scene)
        scene += 1
        name = lambda k, scene=scene, patch=patch: f"{sdir}_{k}_{scene}_p{patch}.tif"  # noqa: E731
        tr = from_origin(400000.0 + 2560 * patch, 5000000.0 - 2560 * scene, 10, 10)
        s2 = np.stack([_s2_uint16(sig, c, b, size) for b in range(13)])
        write_geotiff(root / sdir / f"s2_{scene}" / name("s2"), s2, UTM33, tr)
        s1 = np.stack([_s1_db(sig, c, 13 + b, size, off) for b, off in enumerate((0.0, -7.0))])
        write_geotiff(root / sdir / f"s1_{scene}" / name("s1"), np.clip(s1, -25, 0), UTM33, tr)
        code = IGBP_FULL.index(classes[c]) + 1
        igbp = np.where(rng.random((size, size)) < 0.7, code, rng.integers(1, 18, (size, size))).astype(np.uint16)
        if lc_nodata is not None:
            igbp[: size // 8] = lc_nodata
            nodata_pixels += size // 8 * size
        lc = np.stack([igbp] + [np.full((size, size), 1, np.uint16)] * 3)
        write_geotiff(root / sdir / f"lc_{scene}" / name("lc"), lc, UTM33, tr, nodata=lc_nodata)
        valid = igbp.ravel() if lc_nodata is None else igbp[igbp != lc_nodata]
        probs[name("s2")] = (np.bincount(valid, minlength=18)[1:18] / valid.size).astype(np.float32)
        labels[f"{sdir}_{scene}_p{patch}"] = classes[c]
        meta[f"{sdir}_{scene}_p{patch}"] = {"roi": str(scene)}
    if with_pkl:
        with open(root / "IGBP_probability_labels.pkl", "wb") as f:
            pickle.dump(probs, f)
    return {"root": str(root), "labels": labels, "meta": meta, "lc_nodata_pixels": nodata_pixels}


# --------------------------------------------------------------------------------------------- EuroSAT


def write_eurosat(
    root: str | Path,
    per_class: int = 4,
    classes: list[str] | tuple[str, ...] = EUROSAT_CLASSES,
    seed: int = 0,
    scale: int = 1,
    modalities: tuple[str, ...] = ("rgb", "ms", "s1"),
    size: int = 64,
    sar_dir: str = "EuroSAT-SAR",
    sar_flat: bool = False,
) -> dict:
    """EuroSAT RGB (``2750/``, jpg), MS (``ds/.../tif/``, 13 bands, B8A last) and SAR (``EuroSAT-SAR/``).

    ``size`` other than 64 writes deliberately non-standard patches (tests of ``data.resize``).
    ``sar_dir="eurosat_s1/all_imgs"`` writes the SAR patches as Copernicus-Bench's EuroSAT-S1 ships them;
    ``sar_flat`` puts them directly in ``sar_dir`` (``<Class>_<n>.tif``) instead of class folders.
    """
    root = Path(root)
    sig = _Signal(len(classes), 16, seed)
    ms_dir = root / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif"
    labels: dict[str, str] = {}
    counters = {c: 0 for c in classes}
    for c in _assign(list(classes), per_class * scale):
        cls = classes[c]
        counters[cls] += 1
        stem = f"{cls}_{counters[cls]}"
        tr = from_origin(500000.0 + 640 * counters[cls], 5500000.0 - 640 * c, 10, 10)
        if "ms" in modalities:
            ms = np.stack([_s2_uint16(sig, c, MS_FILE_ORDER.index(b), size) for b in MS_FILE_ORDER])
            write_geotiff(ms_dir / cls / f"{stem}.tif", ms, "EPSG:32631", tr)
        if "rgb" in modalities:
            rgb = np.stack([np.clip(sig.field(c, b, size) * 255, 0, 255) for b in (3, 2, 1)]).astype(np.uint8)
            _write_image(root / "2750" / cls / f"{stem}.jpg", rgb, "JPEG")
        if "s1" in modalities:
            s1 = np.stack([_s1_db(sig, c, 13 + b, size, off) for b, off in enumerate((0.0, -7.0))])
            sar = root / sar_dir if sar_flat else root / sar_dir / cls
            write_geotiff(sar / f"{stem}.tif", s1, "EPSG:4326",
                          from_origin(10.0 + 0.01 * counters[cls], 50.0 - 0.01 * c, 0.0001, 0.0001))  # fmt: skip
        labels[stem] = cls
    return {"root": str(root), "labels": labels}


# --------------------------------------------------------------------------------------------- folder


def write_folder(
    root: str | Path,
    modalities: dict[str, dict] | None = None,
    classes: list[str] | tuple[str, ...] = ("a", "b", "c"),
    per_class: int = 4,
    seed: int = 0,
    scale: int = 1,
    shared_stems: bool = False,
) -> dict:
    """``<root>/<modality>/<Class>/<stem>.<ext>``; ``modalities`` maps name -> ``{ext, bands, size}``.

    ``ext`` is ``tif`` (float32 GeoTIFF), ``png`` (uint8, 1 or 3 bands) or ``npy`` (float32).
    ``shared_stems`` gives every modality the same stems (co-registered own data).
    """
    root = Path(root)
    modalities = modalities or {
        "s1": {"ext": "tif", "bands": 2, "size": 32},
        "rgb": {"ext": "png", "bands": 3, "size": 32},
    }
    labels: dict[str, dict[str, str]] = {}
    for mi, (m, spec) in enumerate(modalities.items()):
        sig = _Signal(len(classes), spec["bands"], seed + mi)
        labels[m] = {}
        for i, c in enumerate(_assign(list(classes), per_class * scale)):
            stem = f"img{i:05d}" if shared_stems else f"{m}_{i:05d}"
            x = np.stack([sig.field(c, b, spec["size"]) for b in range(spec["bands"])]).astype(np.float32)
            path = root / m / classes[c] / f"{stem}.{spec['ext']}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if spec["ext"] == "npy":
                np.save(path, x)
            elif spec["ext"] == "png":
                _write_image(path, np.clip(x * 255, 0, 255).astype(np.uint8), "PNG")
            else:
                write_geotiff(path, x, UTM33, from_origin(0.0, 0.0, 10, 10))
            labels[m][f"{classes[c]}/{stem}"] = classes[c]
    return {"root": str(root), "labels": labels}


WRITERS = {
    "bigearthnet_v1": write_bigearthnet_v1,
    "bigearthnet_v2": write_bigearthnet_v2,
    "sen12ms": write_sen12ms,
    "eurosat": write_eurosat,
    "folder": write_folder,
}


def write_fixture(source: str, root: str | Path, **kwargs) -> dict:
    """Write the fixture of ``source`` (a ``data.source`` name) under ``root``."""
    if source not in WRITERS:
        raise ValueError(f"no fixture writer for source {source!r}; known: {sorted(WRITERS)}")
    return WRITERS[source](root, **kwargs)
