"""A scene as a model reads it: the checkpoint's bands, found by name in one stacked GeoTIFF or in one
file per band, on one reference grid, read window by window (never whole).

Band matching, in this order: an explicit ``NAME=FILE[:INDEX]`` mapping; a file's band descriptions
(``B02``, ``VV``, as GDAL shows them); for a single-band file without a description, the band name
as a token of its file name (``T32TQM_20200101_B02_10m.jp2`` holds ``B02``); for a stacked file
without descriptions, an explicit band order.  Every checkpoint band must be found exactly once.

The reference grid is that of the finest band (Sentinel-2's 10 m bands); a coarser band (20 m,
60 m) is resampled bilinearly onto it as it is read, as the archive readers resample to 10 m.  The
reference grid's pixel size must be the checkpoint's.  A pixel is *valid* when every band has a
finite value there that is not its file's nodata value.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window, from_bounds

from ..data import DataError
from ..data.sources.geotiff import one_line

RES_TOLERANCE = 0.01  # relative difference of pixel sizes still taken as the same resolution


class SceneError(DataError):
    """A scene that cannot be mapped with the checkpoint: the message names the file or band and the remedy."""


@dataclass(frozen=True)
class BandFile:
    band: str  # the checkpoint's band name
    path: Path
    index: int  # 1-based band index in the file


def parse_mapping(items: list[str]) -> dict[str, tuple[Path, int]]:
    """``["B02=scene_B02.tif", "B8A=stack.tif:9"]`` -> band -> (file, 1-based index)."""
    out: dict[str, tuple[Path, int]] = {}
    for item in items:
        if "=" not in item:
            raise SceneError(f"--band {item!r}: write NAME=FILE or NAME=FILE:INDEX")
        name, target = item.split("=", 1)
        m = re.fullmatch(r"(.*?)(?::(\d+))?", target)
        path, index = Path(m.group(1)), int(m.group(2) or 1)
        if name in out:
            raise SceneError(f"--band {name}: given twice")
        out[name] = (path, index)
    return out


def _open(path: Path) -> rasterio.io.DatasetReader:
    if not path.is_file():
        raise SceneError(f"scene file {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as e:
        raise SceneError(f"cannot read scene file {str(path)!r}: {one_line(e)}") from None


def _tokens(path: Path) -> set[str]:
    return {t.upper() for t in re.split(r"[^A-Za-z0-9]+", path.name) if t}


def match_bands(
    bands: list[str], files: list[Path], mapping: dict[str, tuple[Path, int]], order: list[str] | None
) -> list[BandFile]:
    """Where each checkpoint band is (module docstring for the rules)."""
    found: dict[str, list[BandFile]] = {b: [] for b in bands}
    if mapping:
        for name in mapping:
            if name not in found:
                raise SceneError(f"--band {name}: the checkpoint has no band {name!r} (its bands: {bands})")
        for name, (path, index) in mapping.items():
            found[name].append(BandFile(name, path, index))
    if order is not None and len(files) != 1:
        raise SceneError(f"--bands names the bands of ONE stacked file; {len(files)} scene files were given")
    upper = {b.upper(): b for b in bands}
    for path in files:
        with _open(path) as f:
            count, descriptions = f.count, [d or "" for d in f.descriptions]
        if order is not None:
            if len(order) != count:
                raise SceneError(f"--bands lists {len(order)} names; {str(path)!r} has {count} bands")
            names = list(order)
        elif any(descriptions):
            names = descriptions
        elif count == 1:
            hits = [upper[t] for t in _tokens(path) if t in upper]
            names = hits[:1] if len(hits) == 1 else [""]
        else:
            raise SceneError(
                f"{str(path)!r} has {count} bands without descriptions; name them with --bands "
                f"{','.join(bands) if count == len(bands) else 'NAME,NAME,...'} (in file order)"
            )
        for i, name in enumerate(names, start=1):
            b = upper.get(name.upper())
            if b is not None and b not in mapping:
                found[b].append(BandFile(b, path, i))
    for b, where in found.items():
        if len(where) > 1:
            places = ", ".join(f"{str(w.path)!r} band {w.index}" for w in where)
            raise SceneError(f"band {b!r} is in more than one place ({places}); choose one with --band {b}=FILE")
    missing = [b for b, where in found.items() if not where]
    if missing:
        raise SceneError(
            f"band {missing[0]!r} of the checkpoint is not in the scene ({', '.join(repr(str(p)) for p in files)}); "
            f"the checkpoint needs {bands}: give a scene of that sensor, name the file's bands with --bands, or map "
            f"the band with --band {missing[0]}=FILE"
        )
    return [found[b][0] for b in bands]


class SceneReader:
    """Windows of a scene on its reference grid: ``read(row, col, h, w)`` -> (C x h x w float32 values
    in the files' units, h x w valid mask); pixels outside the scene are invalid."""

    def __init__(self, band_files: list[BandFile], pixel_size_m: float | None = None) -> None:
        self.band_files = band_files
        self.files = {bf.path: _open(bf.path) for bf in band_files}
        try:
            self._check(pixel_size_m)
        except Exception:
            self.close()
            raise

    def _check(self, pixel_size_m: float | None) -> None:
        for bf in self.band_files:
            f = self.files[bf.path]
            if bf.index > f.count:
                raise SceneError(
                    f"{str(bf.path)!r} has {f.count} bands; band {bf.band!r} was mapped to index {bf.index}"
                )
        finest = min(self.files.values(), key=lambda f: abs(f.transform.a))
        self.ref = finest
        self.height, self.width = finest.height, finest.width
        self.crs, self.transform = finest.crs, finest.transform
        for path, f in self.files.items():
            if f.crs != self.crs:
                raise SceneError(
                    f"{str(path)!r} is in {f.crs or 'no CRS'}, {str(finest.name)!r} in {self.crs or 'no CRS'}; "
                    "reproject the band files to one CRS (gdalwarp -t_srs)"
                )
            if f.transform.b or f.transform.d:
                raise SceneError(f"{str(path)!r} has a rotated geotransform; warp it north-up first (gdalwarp)")
            same = np.isclose(abs(f.transform.a), abs(self.transform.a), rtol=RES_TOLERANCE)
            if (
                same
                and (f.height, f.width) != (self.height, self.width)
                or same
                and not f.transform.almost_equals(self.transform)
            ):
                raise SceneError(
                    f"{str(path)!r} ({f.height}x{f.width}) is not on the grid of {str(finest.name)!r} "
                    f"({self.height}x{self.width}); clip the band files to one extent"
                )
            if not same and not _covers(f.bounds, finest.bounds, abs(f.transform.a)):
                raise SceneError(
                    f"{str(path)!r} covers {tuple(round(v) for v in f.bounds)}, not the extent of "
                    f"{str(finest.name)!r} {tuple(round(v) for v in finest.bounds)}; clip the band files to one extent"
                )
        self.resampled = {bf.path for bf in self.band_files if self.files[bf.path] is not finest
                          and not np.isclose(abs(self.files[bf.path].transform.a), abs(self.transform.a),
                                             rtol=RES_TOLERANCE)}  # fmt: skip
        if pixel_size_m is None or self.crs is None:
            return
        if not self.crs.is_projected:
            raise SceneError(
                f"{str(finest.name)!r} is in the geographic CRS {self.crs} (degrees); the model was trained on "
                f"{pixel_size_m:g} m pixels: reproject to a projected CRS (gdalwarp -t_srs EPSG:326xx -tr "
                f"{pixel_size_m:g} {pixel_size_m:g})"
            )
        res = abs(self.transform.a) * (self.crs.linear_units_factor[1] if self.crs.linear_units_factor else 1.0)
        if not np.isclose(res, pixel_size_m, rtol=RES_TOLERANCE):
            raise SceneError(
                f"{str(finest.name)!r} has {res:g} m pixels, the checkpoint was trained on {pixel_size_m:g} m "
                f"pixels; resample the scene (gdalwarp -tr {pixel_size_m:g} {pixel_size_m:g} -r bilinear)"
            )

    def read(self, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(self.band_files), h, w), dtype=np.float32)
        valid = np.zeros((h, w), dtype=bool)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + h, self.height), min(col + w, self.width)
        if r1 <= r0 or c1 <= c0:
            return out, valid
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        sub = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        ok = np.ones((r1 - r0, c1 - c0), dtype=bool)
        bounds = rasterio.windows.bounds(inner, self.transform)
        for c, bf in enumerate(self.band_files):
            f = self.files[bf.path]
            try:
                if bf.path in self.resampled:
                    win = from_bounds(*bounds, transform=f.transform)
                    shape = (inner.height, inner.width)
                    x = f.read(bf.index, window=win, out_shape=shape, resampling=Resampling.bilinear, boundless=False)
                    bad = self._nodata(f, f.read(bf.index, window=win, out_shape=shape, resampling=Resampling.nearest))
                else:
                    x = f.read(bf.index, window=inner)
                    bad = self._nodata(f, x)
            except RasterioError as e:
                raise SceneError(f"cannot read {str(bf.path)!r} at rows {r0}..{r1}: {one_line(e)}") from None
            out[c][sub] = x
            ok &= ~bad
        ok &= np.isfinite(out[(slice(None), *sub)]).all(axis=0)
        valid[sub] = ok
        out[:, ~valid] = 0.0
        return out, valid

    @staticmethod
    def _nodata(f: rasterio.io.DatasetReader, x: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(x) if x.dtype.kind == "f" else np.zeros(x.shape, dtype=bool)
        if f.nodata is not None and not np.isnan(f.nodata):
            bad |= x == f.nodata
        return bad

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _covers(outer: rasterio.coords.BoundingBox, inner: rasterio.coords.BoundingBox, slack: float) -> bool:
    return (
        outer.left <= inner.left + slack
        and outer.right >= inner.right - slack
        and outer.bottom <= inner.bottom + slack
        and outer.top >= inner.top - slack
    )
