"""SEN12MS reader: one season, S1 (VV, VH; float32 dB) and S2 (13 bands; uint16 L1C), 256x256.

Layout: ``<root>/ROIs1868_summer/{s1,s2,lc}_<scene>/ROIs1868_summer_{s1,s2,lc}_<scene>_p<patch>.tif``.

Scene label (single-label): the argmax of the 17-class IGBP fraction vector that
``IGBP_probability_labels.pkl`` (root) gives for the S2 file name; when the pkl is absent the
fractions are recomputed from band 1 (IGBP codes 1..17) of the patch's ``lc`` GeoTIFF.  Pixels equal
to the lc raster's nodata value are left out of the fractions and counted (``lc_nodata_pixels``,
``lc_patches_with_nodata`` in the prepare-data report); a patch with no valid pixel is excluded
(``lc_all_nodata``).

Class scheme (``data.igbp_scheme``): ``full`` (default) keeps the 17 IGBP classes, because the
paper's seven summer classes (Evergreen broadleaf forest, Open shrublands, Savannas, ...) are FULL
IGBP classes -- the simplified 10-class scheme merges e.g. all forests and cannot express them.
``simplified`` first sums the fractions into the 10 simplified classes (DFC2020 scheme) and takes
the argmax of those.

Scene metadata (natural partitions): ``roi``, the scene folder number (``s2_146`` -> ``"146"``).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core import DataError
from .archive import RealSource
from .base import MissingDataError, ScanResult, Scene, Sensor
from .geotiff import read_raster
from .registry import register

SEASONS = {
    "spring": "ROIs1158_spring",
    "summer": "ROIs1868_summer",
    "fall": "ROIs1970_fall",
    "winter": "ROIs2017_winter",
}

IGBP_FULL = (
    "Evergreen needleleaf forest", "Evergreen broadleaf forest", "Deciduous needleleaf forest",
    "Deciduous broadleaf forest", "Mixed forest", "Closed shrublands", "Open shrublands", "Woody savannas",
    "Savannas", "Grasslands", "Permanent wetlands", "Croplands", "Urban and built-up",
    "Cropland/natural vegetation mosaics", "Permanent snow and ice", "Barren", "Water bodies",
)  # fmt: skip
IGBP_SIMPLIFIED = (
    "Forest", "Shrubland", "Savanna", "Grassland", "Wetlands", "Croplands", "Urban/built-up", "Snow/ice",
    "Barren", "Water",
)  # fmt: skip
# simplified class -> full IGBP codes (1-based)
_SIMPLIFY = ((1, 2, 3, 4, 5), (6, 7), (8, 9), (10,), (11,), (12, 14), (13,), (15,), (16,), (17,))

PAPER_CLASSES = (
    "Evergreen broadleaf forest", "Open shrublands", "Savannas", "Grasslands", "Croplands",
    "Urban and built-up", "Water bodies",
)  # fmt: skip

LABEL_FILE = "IGBP_probability_labels.pkl"
_PATCH = re.compile(r"^(?P<season>ROIs\d+_[a-z]+)_s2_(?P<scene>\d+)_p(?P<patch>\d+)\.tif$")


@register
class SEN12MS(RealSource):
    name = "sen12ms"
    meta_columns = ("roi",)
    options = ("season", "igbp_scheme")
    sensors = {
        "s1": Sensor(("VV", "VH"), "float32", 256, "float32", mean={"VV": -11.769, "VH": -18.295}, std={"VV": 4.525, "VH": 4.359}),
        "s2": Sensor(
            ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
            "uint16", 256, "uint16",
        ),
    }  # fmt: skip
    classes = PAPER_CLASSES
    layout = (
        "  <root>/ROIs1868_summer/s2_<scene>/ROIs1868_summer_s2_<scene>_p<patch>.tif   (13 bands uint16)\n"
        "  <root>/ROIs1868_summer/s1_<scene>/ROIs1868_summer_s1_<scene>_p<patch>.tif   (VV, VH float32 dB)\n"
        "  <root>/ROIs1868_summer/lc_<scene>/ROIs1868_summer_lc_<scene>_p<patch>.tif   (4 bands, 1st = IGBP)\n"
        "  <root>/IGBP_probability_labels.pkl   (optional: S2 file name -> 17 IGBP fractions)\n"
        "  (season folders: ROIs1158_spring, ROIs1868_summer, ROIs1970_fall, ROIs2017_winter)"
    )

    def __init__(
        self, root: str | Path | None, *, season: str = "summer", igbp_scheme: str = "full", **common: Any
    ) -> None:
        self.season, self.scheme = season, igbp_scheme
        super().__init__(root, **common)

    @property
    def all_classes(self) -> tuple[str, ...]:  # type: ignore[override]
        return IGBP_SIMPLIFIED if self.scheme == "simplified" else IGBP_FULL

    def validate(self) -> None:
        if self.scheme not in ("full", "simplified"):
            raise DataError(f"data.igbp_scheme={self.scheme!r} must be 'full' or 'simplified'")
        if self.season not in SEASONS:
            raise DataError(f"data.season={self.season!r} is not a SEN12MS season; choose from {sorted(SEASONS)}")
        self.season_dir = SEASONS[self.season]
        if self.scheme == "simplified" and not self.chosen_classes:
            raise DataError(
                "data.igbp_scheme=simplified needs data.classes (the paper's classes are full-IGBP classes); "
                f"simplified classes: {list(IGBP_SIMPLIFIED)}"
            )
        super().validate()

    def check_root(self, modalities: list[str] | None = None) -> None:
        super().check_root()
        if not (self.root / self.season_dir).is_dir():
            raise MissingDataError(
                f"{self.name}: season folder {str(self.root / self.season_dir)!r} is missing. Expected layout:\n{self.layout}"
            )

    def scan_options(self) -> dict:
        return {"season": self.season, "igbp_scheme": self.scheme}

    def _s2_files(self) -> list[str]:
        """S2 file names of every patch (derived from the S1 files on a node that holds only S1)."""
        base = self.root / self.season_dir
        for sensor in ("s2", "s1"):
            out = []
            for d in sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(f"{sensor}_")):
                names = [f.name.replace("_s1_", "_s2_") for f in sorted(d.iterdir())]
                out += [f"{self.season_dir}/s2_{d.name[3:]}/{n}" for n in names if _PATCH.match(n)]
            if out:
                return out
        return []

    def scan_inputs(self) -> list[str]:
        s2 = self._s2_files()
        if (self.root / LABEL_FILE).is_file():
            return [LABEL_FILE] + s2
        return s2 + [f.replace("_s2_", "_lc_").replace("/s2_", "/lc_") for f in s2]

    def _fractions_from_lc(self, rel: str) -> tuple[np.ndarray | None, int]:
        """IGBP fractions of the lc raster's valid pixels (``None`` when there is none) + its nodata pixels."""
        lc = read_raster(self.root / rel, what=f"{self.name} lc (IGBP) labels", indexes=[1], count=4, masked=True)
        codes = lc[0].compressed().astype(np.int64)
        nodata = int(lc[0].size - codes.size)
        if codes.size == 0:
            return None, nodata
        if codes.min() < 1 or codes.max() > 17:
            raise DataError(
                f"{self.name}: {str(self.root / rel)!r} band 1 has IGBP codes outside 1..17; "
                "pixels to ignore must carry the raster's nodata value"
            )
        return np.bincount(codes, minlength=18)[1:18] / codes.size, nodata

    def _single(self, frac: np.ndarray) -> str:
        if self.scheme == "simplified":
            merged = np.array([sum(frac[i - 1] for i in grp) for grp in _SIMPLIFY])
            return IGBP_SIMPLIFIED[int(np.argmax(merged))]
        return IGBP_FULL[int(np.argmax(frac))]

    def scan(self) -> ScanResult:
        probs = None
        pkl = self.root / LABEL_FILE
        if pkl.is_file():
            try:
                with open(pkl, "rb") as f:
                    probs = pickle.load(f)  # the official label file is a pickle; only open trusted archives
            except Exception as e:
                raise DataError(f"{self.name}: cannot unpickle {str(pkl)!r}: {e}") from e
        scenes = []
        if probs is not None:
            excluded, counts = {"no_label": 0}, {}
        else:
            excluded, counts = {"lc_all_nodata": 0}, {"lc_nodata_pixels": 0, "lc_patches_with_nodata": 0}
        for rel in self._s2_files():
            fname = rel.rsplit("/", 1)[1]
            m = _PATCH.match(fname)
            if probs is not None:
                if fname not in probs:
                    excluded["no_label"] += 1
                    continue
                frac = np.asarray(probs[fname], dtype=np.float64)
                if frac.shape != (17,):
                    raise DataError(f"{self.name}: {str(pkl)!r} entry {fname} has shape {frac.shape}, expected (17,)")
            else:
                frac, nodata = self._fractions_from_lc(rel.replace("_s2_", "_lc_").replace("/s2_", "/lc_"))
                counts["lc_nodata_pixels"] += nodata
                counts["lc_patches_with_nodata"] += nodata > 0
                if frac is None:
                    excluded["lc_all_nodata"] += 1
                    continue
            sid = f"{m['season']}_{m['scene']}_p{m['patch']}"
            s1 = rel.replace("_s2_", "_s1_").replace("/s2_", "/s1_")
            files = {m: r for m, r in (("s2", rel), ("s1", s1)) if (self.root / r).is_file()}
            scenes.append(Scene(sid, self._single(frac), files, {"roi": m["scene"]}))
        return ScanResult(scenes, excluded, counts)

    def read(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        rel = scene.files.get(sensor)
        if rel is None:
            raise MissingDataError(f"{self.name}: scene {scene.id} has no {sensor} patch")
        s = self.sensors[sensor]
        path = self.root / rel
        arr = read_raster(
            path,
            what=f"{self.name} {sensor}",
            indexes=[s.bands.index(b) + 1 for b in bands],
            count=len(s.bands),
            dtype=s.dtype,
            native=self.native_size(256),
            out_size=self.out_size(sensor),
        )
        return arr, [str(path)]
