"""Raster I/O with rasterio: read chosen bands of one GeoTIFF/PNG/JPEG, validated against what the
format promises (band count, dtype, native size), resampled bilinearly when asked."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from ..core import DataError, check_fits
from .base import MissingDataError


def read_raster(
    path: Path,
    *,
    what: str,
    indexes: list[int] | None = None,
    count: int | None = None,
    dtype: str | None = None,
    native: tuple[int, int] | None = None,
    out_size: int | None = None,
    masked: bool = False,
) -> np.ndarray:
    """Read bands ``indexes`` (1-based) of one raster as ``C x H x W``, validating it first.

    ``count``/``dtype``/``native`` are what the format promises (band count, dtype, H x W); a
    mismatch, an unreadable file or non-finite pixels raise :class:`DataError` naming the file.
    ``out_size`` resamples bilinearly (GDAL) to ``out_size x out_size``.  ``masked`` returns a
    :class:`numpy.ma.MaskedArray` whose mask marks the pixels equal to the raster's nodata value.
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
                        f"{what}: {str(path)!r} is {f.height}x{f.width} pixels, expected {native[0]}x{native[1]} "
                        "(data.resize=<side> resamples patches of any size)"
                    )
                idx = indexes or list(range(1, f.count + 1))
                if max(idx) > f.count:
                    raise DataError(f"{what}: {str(path)!r} has {f.count} bands, band {max(idx)} was requested")
                shape = (len(idx), *((out_size, out_size) if out_size else (f.height, f.width)))
                check_fits(
                    f"{what}: {str(path)!r}",
                    shape,
                    np.dtype(f.dtypes[0]).itemsize,
                    "set data.resize=<side>: the file is then read decimated to that size",
                )
                if out_size is not None and max(f.height, f.width) > DECIMATE_ABOVE * out_size:
                    # GDAL's bilinear read of a raster many times the target size reads every pixel: take a
                    # nearest-neighbour subsample of DECIMATE_ABOVE x the target first (only those pixels
                    # are read), then resample that bilinearly
                    side = DECIMATE_ABOVE * out_size
                    coarse = f.read(idx, out_shape=(len(idx), side, side), resampling=Resampling.nearest, masked=masked)
                    arr = _bilinear(coarse, out_size)
                elif out_size is not None and (f.height, f.width) != (out_size, out_size):
                    arr = f.read(
                        idx, out_shape=(len(idx), out_size, out_size), resampling=Resampling.bilinear, masked=masked
                    )
                else:
                    arr = f.read(idx, masked=masked)
    except RasterioError as e:
        raise DataError(
            f"{what}: cannot read {str(path)!r}: the file is truncated or corrupt ({one_line(e)}); "
            "data.skip_unreadable=true skips unreadable files"
        ) from e
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{what}: {str(path)!r} has {bad} NaN/inf pixel values; {NAN_REMEDY}")
    return arr


DECIMATE_ABOVE = 8  # data.resize: a raster more than 8x the target side is subsampled before resampling


def _bilinear(arr: np.ndarray, size: int) -> np.ndarray:
    """``C x H x W`` resampled bilinearly to ``C x size x size`` (a masked array keeps a mask: any masked source)."""
    import torch
    import torch.nn.functional as F

    def resample(a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()

    out = resample(np.ma.getdata(arr)).astype(arr.dtype)
    if isinstance(arr, np.ma.MaskedArray):
        return np.ma.MaskedArray(out, mask=resample(np.ma.getmaskarray(arr).astype(np.float32)) > 0)
    return out


NAN_REMEDY = "mark them with the raster's nodata value, fill them, or data.skip_unreadable=true skips the file"


def one_line(e: BaseException) -> str:
    """An error's cause as one line: GDAL's own message where rasterio only says to look above."""
    text = str(e).strip()
    cause = e.__cause__ or e.__context__
    if "See previous exception" in text and cause is not None:
        text = str(cause).strip()
    return text.splitlines()[0] if text else type(e).__name__


def raster_header(path: Path, what: str) -> tuple[int, int, int, str]:
    """Band count, height, width and dtype of a raster (its header only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as f:
                return int(f.count), int(f.height), int(f.width), str(f.dtypes[0])
    except RasterioError as e:
        raise DataError(
            f"{what}: cannot read {str(path)!r}: truncated, corrupt or not a raster ({one_line(e)}); "
            "data.skip_unreadable=true skips unreadable files"
        ) from e


NODATA_CLASS = 255  # the nodata value of a class raster (uint8: at most 255 classes)
# class colours (RGB) of class rasters, in class-index order: the embedded land-cover classes first
# (arable, broad-leaved, coniferous, water, pastures, urban), then distinct colours for more classes
PALETTE = [
    (230, 200, 90), (60, 160, 60), (20, 90, 50), (40, 90, 200), (170, 220, 120), (200, 40, 40),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (255, 127, 14),
    (148, 103, 189), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
    (247, 182, 210), (219, 219, 141),
]  # fmt: skip


def class_colours(n: int) -> dict[int, tuple[int, int, int, int]]:
    """RGBA per class index (the palette repeats past its length) and a transparent nodata."""
    colours = {i: (*PALETTE[i % len(PALETTE)], 255) for i in range(n)}
    colours[NODATA_CLASS] = (0, 0, 0, 0)
    return colours


def write_class_metadata(dst: rasterio.io.DatasetWriter, classes: list[str], description: str) -> None:
    """A class raster's colour table, class names (tags ``CLASSES`` as JSON and ``CLASS_<i>``) and band
    description, so that QGIS shows it with names and colours."""
    import json

    if len(classes) >= NODATA_CLASS:
        raise DataError(f"{len(classes)} classes do not fit a uint8 class raster (at most {NODATA_CLASS - 1})")
    dst.write_colormap(1, class_colours(len(classes)))
    dst.update_tags(CLASSES=json.dumps(classes), **{f"CLASS_{i}": c for i, c in enumerate(classes)})
    dst.set_band_description(1, description)
