"""EuroSAT RGB (jpg), EuroSAT MS (13-band GeoTIFF) and EuroSAT-SAR (VV/VH GeoTIFF), 64x64, 10 classes.

The three share ``<Class>/<Class>_<n>.<ext>`` names: a SAR patch and the RGB/MS patch of the same
name show the same place, so ``<Class>_<n>`` is the scene id (and unpaired institutions get
disjoint names).  Careful: the MS files store their bands as B01..B08, B09, B10, B11, B12, B8A
(B8A LAST); bands are selected by name through :attr:`EuroSAT.ms_file_order`.

Folders looked for under the root, first match wins (the official archives' extraction folders):

* rgb: ``2750/``, ``EuroSAT_RGB/``, ``EuroSAT/``
* ms:  ``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/``, ``EuroSAT_MS/``, ``tif/``, ``EuroSATallBands/tif/``
* s1:  ``EuroSAT-SAR/``, ``EuroSAT_SAR/`` (EuroSAT-SAR, Wang et al. 2023), ``eurosat_s1/all_imgs/``
  (Copernicus-Bench's EuroSAT-S1, "functionally identical to EuroSAT-SAR" in torchgeo's
  ``CopernicusBenchEuroSATS1``, which reads ``eurosat_s1/all_imgs/<Class>/<Class>_<n>.tif``; its
  ``eurosat-{train,val,test}.txt`` lists are not used: the splits are built here)

In each folder the files are ``<Class>/<Class>_<n>.<ext>`` or, flat, ``<Class>_<n>.<ext>`` (the class
taken from the name).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core import DataError
from .archive import RealSource
from .base import MissingDataError, ScanResult, Scene, Sensor
from .geotiff import read_raster
from .registry import register

CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
    "Residential", "River", "SeaLake",
)  # fmt: skip
MS_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
MS_FILE_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")

_MS_MEAN = (
    1354.41,
    1118.24,
    1042.93,
    947.63,
    1199.47,
    1999.79,
    2369.22,
    2296.83,
    732.08,
    12.11,
    1819.01,
    1118.92,
    2594.14,
)
_MS_STD = (245.72, 333.01, 395.09, 593.75, 566.42, 861.18, 1086.63, 1117.98, 404.92, 4.78, 1002.59, 761.30, 1231.59)

FOLDERS = {
    "rgb": ("2750", "EuroSAT_RGB", "EuroSAT"),
    "ms": ("ds/images/remote_sensing/otherDatasets/sentinel_2/tif", "EuroSAT_MS", "tif", "EuroSATallBands/tif"),
    "s1": ("EuroSAT-SAR", "EuroSAT_SAR", "eurosat_s1/all_imgs"),
}
EXT = {"rgb": ".jpg", "ms": ".tif", "s1": ".tif"}
_NAME = re.compile(r"^(?P<cls>[A-Za-z]+)_(?P<n>\d+)$")


@register
class EuroSAT(RealSource):
    name = "eurosat"
    ms_file_order = MS_FILE_ORDER
    sensors = {
        "rgb": Sensor(("B04", "B03", "B02"), "uint8", 64, "uint8"),
        "ms": Sensor(
            MS_BANDS, "uint16", 64, "uint16", dict(zip(MS_FILE_ORDER, _MS_MEAN)), dict(zip(MS_FILE_ORDER, _MS_STD))
        ),
        "s1": Sensor(("VV", "VH"), "float32", 64, "float32", {"VV": -12.59, "VH": -20.26}, {"VV": 5.26, "VH": 5.91}),
    }
    classes = CLASSES
    all_classes = CLASSES
    layout = (
        "  <root>/2750/<Class>/<Class>_<n>.jpg                 (rgb: EuroSAT RGB, uint8)\n"
        "  <root>/ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif\n"
        "      (ms: 13 bands uint16, file order B01..B08,B09,B10,B11,B12,B8A; or <root>/EuroSAT_MS/<Class>/...)\n"
        "  <root>/EuroSAT-SAR/<Class>/<Class>_<n>.tif          (s1: VV, VH float32 dB)\n"
        "      (or <root>/eurosat_s1/all_imgs/<Class>/<Class>_<n>.tif, Copernicus-Bench EuroSAT-S1; flat <Class>_<n>.tif too)\n"
        f"  <Class> in {list(CLASSES)}"
    )

    def folder(self, modality: str) -> str | None:
        for cand in FOLDERS[modality]:
            if (self.root / cand).is_dir():
                return cand
        return None

    def check_root(self, modalities: list[str] | None = None) -> None:
        super().check_root()
        for m in modalities or self.modalities:
            if self.folder(m) is None:
                raise MissingDataError(
                    f"{self.name}: no {m} folder under {str(self.root)!r} (looked for {list(FOLDERS[m])}). "
                    f"Expected layout:\n{self.layout}"
                )

    def _listing(self) -> dict[str, tuple[str, list[str]]]:
        """Per modality: its folder and its files, in class folders or directly in it (flat)."""
        out: dict[str, tuple[str, list[str]]] = {}
        for m in FOLDERS:
            top = self.folder(m)
            if top is None:
                continue
            base = self.root / top
            files = [f"{top}/{f.name}" for f in sorted(base.iterdir()) if f.is_file() and f.suffix == EXT[m]]
            for cdir in sorted(p for p in base.iterdir() if p.is_dir()):
                files += [f"{top}/{cdir.name}/{f.name}" for f in sorted(cdir.iterdir()) if f.suffix == EXT[m]]
            out[m] = (top, files)
        return out

    def scan_inputs(self) -> list[str]:
        return [f for _, files in self._listing().values() for f in files]

    def scan(self) -> ScanResult:
        scenes: dict[str, tuple[str, dict[str, str]]] = {}
        for m, (top, files) in self._listing().items():
            for rel in files:
                folder, stem = str(Path(rel).parent), Path(rel).stem
                match = _NAME.match(stem)
                if folder == top:  # flat: the name says the class
                    if match is None or match["cls"] not in CLASSES:
                        raise DataError(
                            f"{self.name}: file {rel!r} is not named <Class>_<n>{EXT[m]} with <Class> in {list(CLASSES)}"
                        )
                    cls = match["cls"]
                else:
                    cls = Path(folder).name
                    if cls not in CLASSES:
                        raise DataError(
                            f"{self.name}: class folder {cls!r} ({rel}) is not a EuroSAT class {list(CLASSES)}"
                        )
                    if match is None or match["cls"] != cls:
                        raise DataError(f"{self.name}: file {rel!r} is not named <Class>_<n>{EXT[m]} after its folder")
                scenes.setdefault(stem, (cls, {}))[1][m] = rel
        return ScanResult([Scene(sid, c, files) for sid, (c, files) in sorted(scenes.items())])

    def read(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        rel = scene.files.get(sensor)
        if rel is None:
            raise MissingDataError(f"{self.name}: scene {scene.id} has no {sensor} patch")
        s = self.sensors[sensor]
        order = MS_FILE_ORDER if sensor == "ms" else s.bands
        path = self.root / rel
        arr = read_raster(
            path,
            what=f"{self.name} {sensor}",
            indexes=[order.index(b) + 1 for b in bands],
            count=len(order),
            dtype=s.dtype,
            native=self.native_size(64),
            out_size=self.out_size(sensor),
        )
        return arr, [str(path)]
