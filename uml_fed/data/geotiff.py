"""Raster I/O with rasterio: read chosen bands of one GeoTIFF/PNG/JPEG, validated against what the
format promises (band count, dtype, native size), resampled bilinearly when asked."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from .base import DataError
from .source import MissingDataError


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
                if out_size is not None and (f.height, f.width) != (out_size, out_size):
                    arr = f.read(
                        idx, out_shape=(len(idx), out_size, out_size), resampling=Resampling.bilinear, masked=masked
                    )
                else:
                    arr = f.read(idx, masked=masked)
    except RasterioError as e:
        raise DataError(f"{what}: cannot read {str(path)!r} (corrupt or not a raster): {e}") from e
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{what}: {str(path)!r} has {bad} NaN/inf pixel values")
    return arr


def raster_header(path: Path, what: str) -> tuple[int, int, int, str]:
    """Band count, height, width and dtype of a raster (its header only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as f:
                return int(f.count), int(f.height), int(f.width), str(f.dtypes[0])
    except RasterioError as e:
        raise DataError(f"{what}: cannot read {str(path)!r} (corrupt or not a raster): {e}") from e
