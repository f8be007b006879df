"""BigEarthNet-MM v1 (BigEarthNet-S1 v1.0 + BigEarthNet-S2 v1.0) and BigEarthNet v2.0 (reBEN) readers.

Both archives store one single-band GeoTIFF per band and patch.  S2 bands come at their native
resolution (10 m: 120x120, 20 m: 60x60, 60 m: 20x20) and are resampled bilinearly to 120x120
(or ``data.resize``) before stacking; S1 VV/VH are float32 dB at 120x120.

Scene labels: v1 reads each S2 patch's ``*_labels_metadata.json`` (43 CORINE names) and maps them
to the 19-class nomenclature; a scene is single-label when its mapped label SET has exactly one
element (labels of the 11 unmapped CORINE classes are ignored).  v2 reads the 19-class ``labels``
column of ``metadata.parquet``.  Snow and cloud/shadow patches are excluded: v1 by the official
lists ``patches_with_seasonal_snow.csv`` / ``patches_with_cloud_and_shadow.csv`` in the root (one
S2 patch name per line, used when present), v2 by the metadata flags.

Scene metadata (natural partitions, ``data.partition.column``): v2 ``country`` (metadata.parquet);
v1 ``tile``, the Sentinel-2 MGRS tile (``33UUP``) from the S2 ``tile_source`` or, on a node that holds
only S1, from the S1 patch name (``S1A_IW_GRDH_1SDV_<time>_33UUP_87_48``).  v1's files name no
country.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..core import DataError
from .archive import RealSource
from .base import MissingDataError, ScanResult, Scene, Sensor
from .geotiff import read_raster
from .registry import register

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
S2_NATIVE = {  # native side in pixels of each band in a 120x120 (10 m) patch
    "B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60,
    "B07": 60, "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60,
}  # fmt: skip

CORINE_43 = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports", "Mineral extraction sites",
    "Dump sites", "Construction sites", "Green urban areas", "Sport and leisure facilities",
    "Non-irrigated arable land", "Permanently irrigated land", "Rice fields", "Vineyards",
    "Fruit trees and berry plantations", "Olive groves", "Pastures", "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Natural grassland",
    "Moors and heathland", "Sclerophyllous vegetation", "Transitional woodland/shrub", "Beaches, dunes, sands",
    "Bare rock", "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons", "Estuaries", "Sea and ocean",
)  # fmt: skip

CLASSES_19 = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops", "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas", "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub", "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands",
    "Inland waters", "Marine waters",
)  # fmt: skip

# 19-class index -> CORINE-43 indices (BigEarthNet-19 nomenclature); the 11 others map to nothing.
_MERGE_19 = (
    (0, 1), (2,), (11, 12, 13), (14, 15, 16, 18), (17,), (19,), (20,), (21,), (22,), (23,), (24,),
    (25, 31), (26, 27), (28,), (29,), (33, 34), (35, 36), (38, 39), (40, 41, 42),
)  # fmt: skip
CORINE_TO_19: dict[str, str] = {CORINE_43[i]: CLASSES_19[k] for k, idx in enumerate(_MERGE_19) for i in idx}

PAPER_CLASSES = ("Arable land", "Broad-leaved forest", "Coniferous forest", "Marine waters", "Pastures", "Urban fabric")

_TILE = re.compile(r"T?(\d{2}[A-Z]{3})")
SNOW_LIST = "patches_with_seasonal_snow.csv"
CLOUD_LIST = "patches_with_cloud_and_shadow.csv"


def map_to_19(labels: list[str], where: str) -> set[str]:
    """CORINE-43 names -> set of 19-class names; an unknown name is an error naming the file."""
    out = set()
    for name in labels:
        if name not in CORINE_43:
            raise DataError(f"{where}: {name!r} is not a CORINE-43 class name of BigEarthNet v1")
        if name in CORINE_TO_19:
            out.add(CORINE_TO_19[name])
    return out


class _BigEarthNet(RealSource):
    sensors = {
        "s1": Sensor(
            ("VV", "VH"), "float32", 120, "float32",
            mean={"VV": -12.620, "VH": -19.290}, std={"VV": 5.116, "VH": 5.464},
        ),
        "s2": Sensor(
            S2_BANDS, "uint16", 120, "uint16",
            mean={"B01": 340.77, "B02": 429.94, "B03": 614.22, "B04": 590.24, "B05": 950.68, "B06": 1792.46,
                  "B07": 2075.47, "B08": 2218.95, "B8A": 2266.46, "B09": 2246.06, "B11": 1594.43, "B12": 1009.33},
            std={"B01": 554.81, "B02": 572.42, "B03": 582.88, "B04": 675.89, "B05": 729.90, "B06": 1096.01,
                 "B07": 1273.45, "B08": 1365.46, "B8A": 1356.14, "B09": 1302.33, "B11": 1079.19, "B12": 818.87},
        ),
    }  # fmt: skip
    classes = PAPER_CLASSES
    all_classes = CLASSES_19

    def read(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        rel = scene.files.get(sensor)
        if rel is None:
            raise MissingDataError(f"{self.name}: scene {scene.id} has no {sensor} patch")
        size = self.out_size(sensor)
        arrays, used = [], []
        for b, path in zip(bands, self.paths(scene, sensor, bands)):
            native = self.native_size(S2_NATIVE[b] if sensor == "s2" else 120)
            what = f"{self.name} {sensor} band {b}"
            arrays.append(
                read_raster(path, what=what, count=1, dtype=self.sensors[sensor].dtype, native=native, out_size=size)
            )
            used.append(str(path))
        return np.concatenate(arrays, axis=0), used

    def paths(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> list[Path]:
        rel = scene.files.get(sensor)
        if rel is None:
            return []
        folder = self.root / rel
        return [folder / f"{folder.name}_{b}.tif" for b in bands]


def mgrs_tile(name: str) -> str:
    """The MGRS tile (``33UUP``) named in an S2 ``tile_source`` or an S1 patch name; "" when none."""
    for part in name.replace(".", "_").split("_"):
        m = _TILE.fullmatch(part)
        if m:
            return m.group(1)
    return ""


@register
class BigEarthNetV1(_BigEarthNet):
    """BigEarthNet-MM v1: ``BigEarthNet-v1.0/<S2 patch>/`` and ``BigEarthNet-S1-v1.0/<S1 patch>/``."""

    name = "bigearthnet_v1"
    meta_columns = ("tile",)
    s2_dir = "BigEarthNet-v1.0"
    s1_dir = "BigEarthNet-S1-v1.0"
    layout = (
        "  <root>/BigEarthNet-v1.0/<S2 patch>/<S2 patch>_{B01..B12,B8A}.tif + <S2 patch>_labels_metadata.json\n"
        "  <root>/BigEarthNet-S1-v1.0/<S1 patch>/<S1 patch>_{VV,VH}.tif + <S1 patch>_labels_metadata.json\n"
        "  <root>/patches_with_seasonal_snow.csv, patches_with_cloud_and_shadow.csv   (optional exclusion lists)"
    )

    def _patch_dirs(self, sub: str) -> list[str]:
        base = self.root / sub
        return sorted(e.name for e in base.iterdir() if e.is_dir()) if base.is_dir() else []

    def check_root(self, modalities: list[str] | None = None) -> None:
        super().check_root()
        need = {"s2": self.s2_dir, "s1": self.s1_dir}
        for m in modalities or self.modalities:
            if not (self.root / need[m]).is_dir():
                raise MissingDataError(
                    f"{self.name}: folder {str(self.root / need[m])!r} for modality {m!r} is missing. "
                    f"Expected layout:\n{self.layout}"
                )

    def scan_inputs(self) -> list[str]:
        out = []
        for sub in (self.s2_dir, self.s1_dir):
            out += [f"{sub}/{p}/{p}_labels_metadata.json" for p in self._patch_dirs(sub)]
        return out + [n for n in (SNOW_LIST, CLOUD_LIST) if (self.root / n).is_file()]

    def _labels(self, path: Path) -> dict:
        if not path.is_file():
            raise MissingDataError(f"{self.name}: label file {str(path)!r} is missing")
        try:
            with open(path) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{self.name}: label file {str(path)!r} is not valid JSON: {e}") from e
        if "labels" not in meta:
            raise DataError(f"{self.name}: label file {str(path)!r} has no 'labels' key")
        return meta

    def _exclusions(self) -> dict[str, set[str]]:
        out = {}
        for key, name in (("seasonal_snow", SNOW_LIST), ("cloud_or_shadow", CLOUD_LIST)):
            p = self.root / name
            if p.is_file():
                with open(p) as f:
                    out[key] = {ln.strip().split(",")[0] for ln in f if ln.strip()}
        return out

    def scan(self) -> ScanResult:
        excl = self._exclusions()
        excluded = {k: 0 for k in excl} | {"multi_label": 0, "no_19_class_label": 0}
        s1_of: dict[str, str] = {}
        s1_labels: dict[str, list[str]] = {}
        for p in self._patch_dirs(self.s1_dir):
            meta = self._labels(self.root / self.s1_dir / p / f"{p}_labels_metadata.json")
            s2 = meta.get("corresponding_s2_patch")
            if not s2:
                raise DataError(f"{self.name}: {p}_labels_metadata.json has no 'corresponding_s2_patch'")
            s1_of[s2] = p
            s1_labels[s2] = meta["labels"]
        s2_patches = self._patch_dirs(self.s2_dir)
        ids = s2_patches if s2_patches else sorted(s1_of)
        scenes = []
        for sid in ids:
            if any(sid in lst for lst in excl.values()):
                for k, lst in excl.items():
                    excluded[k] += sid in lst
                continue
            if s2_patches:
                path = self.root / self.s2_dir / sid / f"{sid}_labels_metadata.json"
                meta = self._labels(path)
                labels, tile = meta["labels"], mgrs_tile(str(meta.get("tile_source", "")))
            else:
                path = self.root / self.s1_dir / s1_of[sid] / f"{s1_of[sid]}_labels_metadata.json"
                labels, tile = s1_labels[sid], mgrs_tile(s1_of[sid])
            mapped = map_to_19(labels, str(path))
            if len(mapped) != 1:
                excluded["multi_label" if mapped else "no_19_class_label"] += 1
                continue
            files = {}
            if s2_patches:
                files["s2"] = f"{self.s2_dir}/{sid}"
            if sid in s1_of:
                files["s1"] = f"{self.s1_dir}/{s1_of[sid]}"
            scenes.append(Scene(sid, next(iter(mapped)), files, {"tile": tile} if tile else {}))
        return ScanResult(scenes, excluded)


@register
class BigEarthNetV2(_BigEarthNet):
    """BigEarthNet v2.0 (reBEN): ``metadata.parquet`` + ``BigEarthNet-S2/`` + ``BigEarthNet-S1/``."""

    name = "bigearthnet_v2"
    meta_columns = ("country",)
    layout = (
        "  <root>/metadata.parquet   (patch_id, labels, split, country, s1_name, s2v1_name, contains_seasonal_snow, "
        "contains_cloud_or_shadow)\n"
        "  <root>/BigEarthNet-S2/<patch_id minus last 2 '_' parts>/<patch_id>/<patch_id>_{B01..B12,B8A}.tif\n"
        "  <root>/BigEarthNet-S1/<s1_name minus last 3 '_' parts>/<s1_name>/<s1_name>_{VV,VH}.tif"
    )
    metadata = "metadata.parquet"
    columns = ("patch_id", "labels", "s1_name", "contains_seasonal_snow", "contains_cloud_or_shadow")

    def scan_inputs(self) -> list[str]:
        return [self.metadata]

    def scan(self) -> ScanResult:
        import pyarrow.parquet as pq

        path = self.root / self.metadata
        if not path.is_file():
            raise MissingDataError(f"{self.name}: label file {str(path)!r} is missing. Expected layout:\n{self.layout}")
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several unrelated types for a broken file
            raise DataError(f"{self.name}: cannot read {str(path)!r} as parquet: {e}") from e
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise DataError(f"{self.name}: {str(path)!r} lacks column(s) {missing}; has {table.column_names}")
        cols = {c: table.column(c).to_pylist() for c in self.columns}
        countries = table.column("country").to_pylist() if "country" in table.column_names else [None] * table.num_rows
        excluded = {"seasonal_snow": 0, "cloud_or_shadow": 0, "multi_label": 0}
        scenes = []
        for country, pid, labels, s1, snow, cloud in zip(countries, *(cols[c] for c in self.columns)):
            if snow or cloud:
                excluded["seasonal_snow"] += bool(snow)
                excluded["cloud_or_shadow"] += bool(cloud)
                continue
            for lab in labels:
                if lab not in CLASSES_19:
                    raise DataError(f"{self.name}: {str(path)!r} patch {pid}: {lab!r} is not a 19-class label")
            if len(set(labels)) != 1:
                excluded["multi_label"] += 1
                continue
            files = {"s2": f"BigEarthNet-S2/{'_'.join(pid.split('_')[:-2])}/{pid}"}
            if s1:
                files["s1"] = f"BigEarthNet-S1/{'_'.join(s1.split('_')[:-3])}/{s1}"
            scenes.append(Scene(pid, labels[0], files, {"country": str(country)} if country else {}))
        return ScanResult(scenes, excluded)
