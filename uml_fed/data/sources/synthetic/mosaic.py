"""A whole synthetic scene with known land cover: a mosaic of the embedded scene types, georeferenced.

The scene is a grid of cells of one patch side each.  Cells are grouped into regions (a Voronoi map
over the cell grid, about ``region_cells`` cells across) and every region gets one class; every cell
is then one scene of its region's class, drawn and rendered exactly as a training patch is
(:func:`.scenes.material_maps`, :func:`.render.render`).  The label raster gives every pixel its
cell's class.  A window aligned with the cell grid therefore sees one training-like patch; a shifted
window sees parts of up to four cells (of one class inside a region, of two at a region border).

Written strip by strip (one row of cells at a time), so a scene of any size is generated in bounded
memory: ``uml-fed scene OUT.tif --modality s2 --size 10980``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core import DataError
from ..geotiff import NODATA_CLASS, write_class_metadata
from .render import GSD_BLOCK, S2_GSD, SENSOR_KIND, SENSORS, render
from .scenes import CLASSES, draw_regions, material_maps

CRS = "EPSG:32632"  # WGS 84 / UTM 32N, where many Sentinel tiles lie
ORIGIN = (600000.0, 5300000.0)  # upper-left corner (easting, northing) in metres


@dataclass(frozen=True)
class MosaicSpec:
    modality: str  # s1 | s2 | rgb (a synthetic sensor of land cover)
    height: int  # pixels
    width: int
    patch: int = 32  # cell side in pixels (the checkpoint's patch size)
    region_cells: int = 4  # mean region side in cells
    seed: int = 0
    mixing: float = 0.35
    enl: float = 4.4
    snr_scale: float = 1.0
    pixel_size_m: float = 10.0

    def check(self) -> None:
        if self.modality not in SENSORS or SENSOR_KIND[self.modality] == "objects":
            land = sorted(m for m in SENSORS if SENSOR_KIND[m] != "objects")
            raise DataError(f"--modality {self.modality!r}: a scene needs a land-cover sensor, one of {land}")
        if self.height < 1 or self.width < 1:
            raise DataError(f"--size {self.height}x{self.width}: a scene needs at least one pixel")
        if self.patch < 8 or self.patch % 4:
            raise DataError(f"--patch {self.patch}: the cell side must be a multiple of 4, at least 8")
        if self.region_cells < 1:
            raise DataError(f"--region-cells {self.region_cells} must be >= 1")


def _rng(spec: MosaicSpec, *parts: object) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in (spec.seed, "mosaic", *parts)])


def region_classes(spec: MosaicSpec) -> np.ndarray:
    """The class of every cell (rows x cols of cells): a Voronoi map of random sites, one class each."""
    rows, cols = -(-spec.height // spec.patch), -(-spec.width // spec.patch)
    rng = _rng(spec, "regions")
    n_sites = max(1, round(rows * cols / spec.region_cells**2))
    sites = rng.uniform(0, 1, (n_sites, 2)) * [rows, cols]
    site_class = rng.integers(0, len(CLASSES), n_sites)
    out = np.empty((rows, cols), dtype=np.int64)
    cc = np.arange(cols) + 0.5
    for r in range(rows):  # row by row: bounded by the sites x one row of cells
        d = (sites[:, 0, None] - (r + 0.5)) ** 2 + (sites[:, 1, None] - cc[None]) ** 2
        out[r] = site_class[d.argmin(axis=0)]
    return out


def render_strip(spec: MosaicSpec, bands: list[str], cells: np.ndarray, row: int) -> np.ndarray:
    """One row of cells rendered: C x patch x (cols * patch) float32, in the sensor's physical units."""
    p = spec.patch
    out = np.empty((len(bands), p, len(cells) * p), dtype=np.float32)
    rng = _rng(spec, spec.modality, "strip", row)
    for cls in np.unique(cells):
        where = np.flatnonzero(cells == cls)
        maps, seg = material_maps(int(cls), len(where), p, rng, spec.mixing)
        labels = np.full(len(where), cls)
        region = draw_regions(labels, rng)
        images = render(
            spec.modality, bands, maps, seg, labels, rng,
            enl=spec.enl, snr_scale=spec.snr_scale, region=region, effect=0.0,
        )  # fmt: skip
        for k, j in enumerate(where):
            out[:, :, j * p : (j + 1) * p] = images[k]
    return out


def write_mosaic(
    spec: MosaicSpec, out: str | Path, labels: str | Path | None = None, per_band: bool = False
) -> list[Path]:
    """Write the scene (one stacked GeoTIFF, or with ``per_band`` one file per band at the band's own
    ground sampling, as Sentinel-2 products ship them) and its label raster; returns the files written.

    Sentinel-2-like bands are uint16 reflectance x 10000 with nodata 0 (as L2A); Sentinel-1-like bands
    float32 sigma0 in dB with nodata NaN.  Band descriptions carry the band names.
    """
    import rasterio
    from rasterio.transform import from_origin

    spec.check()
    bands = list(SENSORS[spec.modality])
    optical = SENSOR_KIND[spec.modality] == "optical"
    dtype, nodata = ("uint16", 0) if optical else ("float32", float("nan"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = spec.pixel_size_m
    transform = from_origin(*ORIGIN, res, res)
    profile = dict(
        driver="GTiff", crs=CRS, dtype=dtype, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", BIGTIFF="IF_SAFER",
    )  # fmt: skip
    # per band, pixels of 10 m per file pixel: 2 for the 20 m bands; 4 for the 60 m bands, which the
    # generator renders at 40 m (render.GSD_BLOCK)
    factors = {b: (GSD_BLOCK.get(S2_GSD.get(b, 10), 1) if optical and per_band else 1) for b in bands}
    if per_band:
        bad = [b for b, f in factors.items() if spec.patch % f or spec.height % f or spec.width % f]
        if bad:
            raise DataError(f"--per-band: bands {bad} are coarser; choose --size and --patch multiples of 4")
        paths = {b: out.with_name(f"{out.stem}_{b}{out.suffix}") for b in bands}
        files = {
            b: rasterio.open(
                paths[b],
                "w",
                **profile,
                count=1,
                height=spec.height // factors[b],
                width=spec.width // factors[b],
                transform=from_origin(*ORIGIN, res * factors[b], res * factors[b]),
            )  # fmt: skip
            for b in bands
        }
    else:
        paths = {"": out}
        files = {"": rasterio.open(out, "w", **profile, count=len(bands), height=spec.height, width=spec.width,
                                   transform=transform)}  # fmt: skip
    lab = None
    if labels is not None:
        labels = Path(labels)
        lab = rasterio.open(
            labels, "w", driver="GTiff", crs=CRS, transform=transform, dtype="uint8", nodata=NODATA_CLASS, count=1,
            height=spec.height, width=spec.width, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
        )  # fmt: skip
    try:
        for f in files.values():
            f.update_tags(SENSOR=spec.modality, GENERATOR="uml-fed scene (synthetic mosaic)", SEED=str(spec.seed))
        if per_band:
            for b, f in files.items():
                f.set_band_description(1, b)
        else:
            for i, b in enumerate(bands, start=1):
                files[""].set_band_description(i, b)
        if lab is not None:
            write_class_metadata(lab, list(CLASSES), "label")
        cells = region_classes(spec)
        p = spec.patch
        for r in range(cells.shape[0]):
            y0, h = r * p, min(p, spec.height - r * p)
            strip = render_strip(spec, bands, cells[r], r)[:, :h, : spec.width]
            if optical:
                strip = np.clip(np.rint(strip), 1, 65535).astype(np.uint16)  # 0 is nodata
            win = rasterio.windows.Window(0, y0, spec.width, h)
            if per_band:
                for c, b in enumerate(bands):
                    k = factors[b]
                    band = strip[c].astype(np.float32)
                    if k > 1:  # the coarser band's pixel: the mean of the k x k 10 m pixels it covers
                        band = band.reshape(h // k, k, -1, k).mean(axis=(1, 3))
                    files[b].write(
                        band.astype(dtype)[None], window=rasterio.windows.Window(0, y0 // k, spec.width // k, h // k)
                    )
            else:
                files[""].write(strip.astype(dtype, copy=False), window=win)
            if lab is not None:
                labels_row = np.repeat(cells[r], p)[: spec.width].astype(np.uint8)
                lab.write(np.broadcast_to(labels_row, (h, spec.width))[None], window=win)
    finally:
        for f in files.values():
            f.close()
        if lab is not None:
            lab.close()
    return [*paths.values(), *([labels] if labels is not None else [])]


def write_noise_scene(path: str | Path, bands: list[str], side: int) -> Path:
    """A ``side`` x ``side`` scene of uniform random uint16 values (nodata 0) with the mosaic's grid and
    the given band names, written 256 rows at a time: for throughput and memory measurements, where
    what the pixels show does not matter and the known-cover mosaic would take minutes to render."""
    import rasterio
    from rasterio.transform import from_origin

    prof = dict(
        driver="GTiff", height=side, width=side, count=len(bands), dtype="uint16", nodata=0, crs=CRS,
        transform=from_origin(*ORIGIN, 10, 10), tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **prof) as f:
        for i, b in enumerate(bands, start=1):
            f.set_band_description(i, b)
        for r in range(0, side, 256):
            h = min(256, side - r)
            f.write(rng.integers(200, 4000, (len(bands), h, side), dtype=np.uint16), window=((r, r + h), (0, side)))
    return Path(path)
