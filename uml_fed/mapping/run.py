"""Whole-scene inference: a calibrated institution checkpoint slid over a scene, window probabilities
blended per pixel, a georeferenced class map written tile by tile.

Memory is bounded by the tile and batch sizes, not the scene: at any time the mapper holds one read
region (bands x (T + P)^2 float32, T = tile side, P = patch), one blended tile (classes x T^2,
float64, twice), one batch (B x bands x P^2 float32) and the probabilities of the window rows that
the current tile row shares with the next (classes x (T/S + P/S + 1) x W/S float32, S = stride,
W = scene width: about 2 MB for a 10,980-pixel-wide Sentinel-2 tile at P = 32, S = 16).
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from ..data.sources.geotiff import NODATA_CLASS, write_class_metadata
from ..evaluation import tracks_running_stats
from ..results import load_checkpoint
from ..train import resolve_device
from .scene import SceneError, SceneReader, match_bands
from .tiling import BLENDS, blend_tile, covering, origins, profile, weight_matrix

BLOCK = 256  # GeoTIFF block side of every output


@dataclass
class MapOptions:
    stride: int | None = None  # None = half the patch (every interior pixel covered by 4 windows)
    blend: str = "cosine"  # cosine | uniform (tiling.py)
    batch_size: int = 256
    tile: int = 1024  # output tile side in pixels (a multiple of 256)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    min_valid: float = 0.5  # a window is classified when this fraction of its in-scene pixels is valid
    patch_size: int | None = None  # only for a checkpoint that does not record it
    probabilities: Path | None = None  # also write the blended per-class probabilities (float32 bands)
    confidence: Path | None = None  # also write the top-class probability (float32, one band)
    cog: bool = False  # convert the outputs to Cloud-Optimized GeoTIFFs (with overviews)
    progress: bool = True
    gdal_cache_mb: int = 64  # GDAL's block cache (GDAL_CACHEMAX; its default is 5 % of the machine's memory)

    def __post_init__(self) -> None:
        self.probabilities = None if self.probabilities is None else Path(self.probabilities)
        self.confidence = None if self.confidence is None else Path(self.confidence)


@dataclass
class MapSummary:
    out: str
    modality: str
    classes: list[str]
    height: int
    width: int
    patch: int
    stride: int
    blend: str
    windows: int  # windows in the grid
    classified: int  # windows that held enough valid pixels to be classified
    seconds: float
    windows_per_s: float
    pixels_per_s: float
    device: str
    peak_rss_mb: float
    resampled_bands: list[str] = field(default_factory=list)
    class_pixels: dict[str, int] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _check(opt: MapOptions, patch: int) -> int:
    stride = opt.stride if opt.stride is not None else max(1, patch // 2)
    if not 1 <= stride <= patch:
        raise SceneError(f"--stride {stride}: between 1 and the patch size {patch} (gaps would leave pixels unmapped)")
    if opt.blend not in BLENDS:
        raise SceneError(f"--blend {opt.blend!r}: one of {', '.join(BLENDS)}")
    if opt.batch_size < 1:
        raise SceneError(f"--batch-size {opt.batch_size} must be >= 1")
    if opt.tile < BLOCK or opt.tile % BLOCK:
        raise SceneError(f"--tile {opt.tile}: a multiple of {BLOCK} (the GeoTIFF block side)")
    if not 0.0 < opt.min_valid <= 1.0:
        raise SceneError(f"--min-valid {opt.min_valid}: a fraction in (0, 1]")
    return stride


class _Outputs:
    """The class map and the optional float rasters, written tile by tile to ``.<name>.part`` files that
    take their names (or are converted to COGs) only when the whole map is done."""

    def __init__(self, out: Path, reader: SceneReader, meta: dict[str, Any], opt: MapOptions, tags: dict[str, str]):
        import rasterio

        self.cog = opt.cog
        self.final: list[tuple[Path, Path, str]] = []
        base = dict(
            driver="GTiff", height=reader.height, width=reader.width, crs=reader.crs, transform=reader.transform,
            tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", BIGTIFF="IF_SAFER",
        )  # fmt: skip
        classes = list(meta["classes"])

        def open_(path: Path, resampling: str, **kw: Any):  # type: ignore[no-untyped-def]
            path.parent.mkdir(parents=True, exist_ok=True)
            target = path.with_name(f".{path.name}.part")  # the final name only once complete
            self.final.append((target, path, resampling))
            dst = rasterio.open(target, "w", **base, **kw)
            dst.update_tags(**tags)
            return dst

        self.classes = self.probs = self.conf = None
        try:
            self.classes = open_(out, "NEAREST", count=1, dtype="uint8", nodata=NODATA_CLASS)
            write_class_metadata(self.classes, classes, "class")
            if opt.probabilities is not None:
                self.probs = open_(opt.probabilities, "AVERAGE", count=len(classes), dtype="float32",
                                   nodata=float("nan"), predictor=3)  # fmt: skip
                for i, c in enumerate(classes, start=1):
                    self.probs.set_band_description(i, c)
            if opt.confidence is not None:
                self.conf = open_(opt.confidence, "AVERAGE", count=1, dtype="float32", nodata=float("nan"), predictor=3)
                self.conf.set_band_description(1, "top-class probability")
        except Exception:
            self.close(ok=False)
            raise

    def write(self, window, labels: np.ndarray, probs: np.ndarray, valid: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        self.classes.write(labels[None], window=window)
        if self.probs is not None:
            self.probs.write(np.where(valid[None], probs, np.nan).astype(np.float32), window=window)
        if self.conf is not None:
            self.conf.write(np.where(valid, probs.max(axis=0), np.nan).astype(np.float32)[None], window=window)

    def close(self, ok: bool) -> None:
        from rasterio.shutil import copy

        for dst in (self.classes, self.probs, self.conf):
            if dst is not None:
                dst.close()
        for target, path, resampling in self.final:
            if ok and self.cog:
                copy(target, path, driver="COG", compress="DEFLATE", overview_resampling=resampling, BIGTIFF="IF_SAFER")
            elif ok:
                target.replace(path)
            target.unlink(missing_ok=True)


def map_scene(
    checkpoint: str | Path,
    scene: list[str | Path],
    out: str | Path,
    opt: MapOptions | None = None,
    band_mapping: dict[str, tuple[Path, int]] | None = None,
    band_order: list[str] | None = None,
) -> MapSummary:
    """Map ``scene`` (one stacked file or one file per band) with a checkpoint into ``out`` (GeoTIFF)."""
    import rasterio
    from rasterio.windows import Window

    opt = opt or MapOptions()
    try:
        model, meta = load_checkpoint(checkpoint)
    except ValueError as e:
        raise SceneError(f"{e}; give a checkpoint from <run>/checkpoints/") from None
    if not tracks_running_stats(model):
        raise SceneError(
            f"checkpoint {checkpoint} has BN layers without statistics (saved uncalibrated): its predictions would "
            "depend on the batch; use a calibrated checkpoint (train.bn_cal_epochs > 0)"
        )
    patch = meta.get("patch_size") or opt.patch_size
    if not patch:
        raise SceneError(f"checkpoint {checkpoint} does not record its patch size; give --patch-size (pixels)")
    stride = _check(opt, int(patch))
    try:
        device = resolve_device(opt.device, key="--device")
    except (ValueError, RuntimeError) as e:
        raise SceneError(str(e).splitlines()[0]) from None
    model = model.to(device)
    bands = list(meta["bands"])
    files = match_bands(bands, [Path(p) for p in scene], band_mapping or {}, band_order)
    mean = np.asarray(meta["mean"] if meta["mean"] is not None else np.zeros(len(bands)), dtype=np.float32)
    std = np.asarray(meta["std"] if meta["std"] is not None else np.ones(len(bands)), dtype=np.float32)
    tile, classes = opt.tile, list(meta["classes"])
    tags = {
        "MODEL_MODALITY": str(meta["modality"]),
        "MODEL_BANDS": json.dumps(bands),
        "CHECKPOINT": Path(checkpoint).name,
        "PATCH": str(patch),
        "STRIDE": str(stride),
        "BLEND": opt.blend,
        "PIXEL_VALUE": (
            "argmax of the blended class probabilities of the windows covering the pixel (a patch classifier: "
            f"one label per {patch} x {patch}-pixel window; detail smaller than a window is not resolved)"
        ),
    }
    tic = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=opt.gdal_cache_mb), SceneReader(files, meta.get("pixel_size_m")) as reader:
        H, W = reader.height, reader.width
        ys, xs = origins(H, patch, stride), origins(W, patch, stride)
        weights = profile(patch, opt.blend)
        bar = _progress(len(ys) * len(xs), opt.progress)
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        counts = np.zeros(len(classes), dtype=np.int64)
        classified = 0
        outputs = _Outputs(Path(out), reader, meta, opt, tags)
        ok = False
        try:
            for ty0 in range(0, H, tile):
                ty1 = min(H, ty0 + tile)
                a, b = covering(ys, ty0, ty1, patch)
                for r in [r for r in cache if r < a]:
                    del cache[r]
                todo = [r for r in range(a, b) if r not in cache]
                if todo:
                    classified += _classify_rows(
                        model,
                        reader,
                        todo,
                        ys,
                        xs,
                        patch,
                        max(1, tile // stride),
                        len(classes),
                        mean,
                        std,
                        opt,
                        device,
                        cache,
                        bar,
                    )
                wy = weight_matrix(ty0, ty1 - ty0, ys[a:b], weights)
                for tx0 in range(0, W, tile):
                    tx1 = min(W, tx0 + tile)
                    c, d = covering(xs, tx0, tx1, patch)
                    probs = np.stack([cache[r][0][c:d] for r in range(a, b)])
                    used = np.stack([cache[r][1][c:d] for r in range(a, b)])
                    blended, norm = blend_tile(probs, used, wy, weight_matrix(tx0, tx1 - tx0, xs[c:d], weights))
                    _, valid = reader.read(ty0, tx0, ty1 - ty0, tx1 - tx0)
                    valid &= norm > 0
                    labels = np.where(valid, blended.argmax(axis=0), NODATA_CLASS).astype(np.uint8)
                    counts += np.bincount(labels[valid], minlength=len(classes))[: len(classes)]
                    outputs.write(Window(tx0, ty0, tx1 - tx0, ty1 - ty0), labels, blended, valid)
            ok = True
        finally:
            bar.close()
            outputs.close(ok)
        resampled = [bf.band for bf in reader.band_files if bf.path in reader.resampled]
    seconds = time.perf_counter() - tic
    return MapSummary(
        out=str(out), modality=str(meta["modality"]), classes=classes, height=H, width=W, patch=int(patch),
        stride=stride, blend=opt.blend, windows=len(ys) * len(xs), classified=classified, seconds=round(seconds, 3),
        windows_per_s=round(len(ys) * len(xs) / seconds, 1), pixels_per_s=round(H * W / seconds, 1),
        device=str(device), peak_rss_mb=round(peak_rss_mb(), 1), resampled_bands=resampled,
        class_pixels={c: int(n) for c, n in zip(classes, counts)},
    )  # fmt: skip


@torch.inference_mode()
def _classify_rows(
    model: torch.nn.Module, reader: SceneReader, rows: list[int], ys: np.ndarray, xs: np.ndarray, patch: int,
    per_chunk: int, n_classes: int, mean: np.ndarray, std: np.ndarray, opt: MapOptions, device: torch.device,
    cache: dict[int, tuple[np.ndarray, np.ndarray]], bar: Any,
) -> int:  # fmt: skip
    """Probabilities of every window of the given consecutive window rows, read region by region
    (``per_chunk`` windows across at a time); returns how many windows were classified."""
    r0, r1 = rows[0], rows[-1] + 1
    classified = 0
    out_p = np.zeros((r1 - r0, len(xs), n_classes), dtype=np.float32)
    out_u = np.zeros((r1 - r0, len(xs)), dtype=bool)
    for c0 in range(0, len(xs), per_chunk):
        c1 = min(len(xs), c0 + per_chunk)
        top, left = int(ys[r0]), int(xs[c0])
        h, w = int(ys[r1 - 1]) + patch - top, int(xs[c1 - 1]) + patch - left
        x, valid = reader.read(top, left, h, w)
        x = (x - mean[:, None, None]) / std[:, None, None]
        x[:, ~valid] = 0.0  # a masked pixel reads as its band's training mean
        integral = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        wy, wx = np.meshgrid(ys[r0:r1] - top, xs[c0:c1] - left, indexing="ij")
        count = (
            integral[wy + patch, wx + patch] - integral[wy, wx + patch] - integral[wy + patch, wx] + integral[wy, wx]
        )
        gy, gx = np.meshgrid(ys[r0:r1], xs[c0:c1], indexing="ij")
        in_scene = np.minimum(patch, reader.height - gy) * np.minimum(patch, reader.width - gx)
        use = count >= opt.min_valid * in_scene
        out_u[:, c0:c1] = use
        views = sliding_window_view(x, (patch, patch), axis=(1, 2))
        idx = np.flatnonzero(use)
        for s in range(0, len(idx), opt.batch_size):
            sel = idx[s : s + opt.batch_size]
            batch = np.ascontiguousarray(np.moveaxis(views[:, wy.flat[sel], wx.flat[sel]], 0, 1))
            logits = model(torch.from_numpy(batch).to(device, non_blocking=True))
            p = torch.softmax(logits.float(), dim=1).cpu().numpy()
            ri, ci = np.unravel_index(sel, use.shape)
            out_p[ri, c0 + ci] = p
        classified += len(idx)
        bar.update(use.size)
    for k, r in enumerate(range(r0, r1)):
        cache[r] = (out_p[k], out_u[k])
    return classified


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="window", disable=not enabled, desc="uml-fed map")


def summary_json(s: MapSummary) -> str:
    return json.dumps(asdict(s))
