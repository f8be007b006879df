"""Embedded synthetic Sentinel-like scenes: the default data, generated in seconds, no download.

Physical assumptions (each a simplification of real Sentinel-1/2 land-cover imagery):

* **Scenes.** A scene is a 10 m-pixel map of seven surface materials (water, broad-leaved canopy,
  coniferous canopy, green crop, bare soil, grass, impervious surface) and a map of the parcels,
  fields, stands or blocks it is divided into.  Each class is a land-cover type with its own spatial
  layout: *Arable land* = long parallel parcels, each green crop, bare soil or ley grass;
  *Pastures* = irregular (Voronoi) grazed fields, a few cropped, bounded by hedgerows;
  *Broad-leaved* / *Coniferous forest* = closed canopy in stands with grass gaps; *Marine waters* =
  open water with an occasional coast; *Urban fabric* = a street grid of impervious blocks with
  gardens.  Arable land and pastures share their materials: what tells them apart is the geometry of
  the parcels, as in real imagery.  Like real patches labelled by their dominant cover, every scene
  is mixed: a non-dominant cover occupies a random fraction (mean ``mixing``) drawn from smooth
  Gaussian random fields.
* **Sentinel-2-like optical (L2A reflectance x 10000, uint16 scale).**  Per-material surface
  reflectance spectra at the 13 MSI band centres follow typical signatures: water dark and falling to
  ~0 in NIR/SWIR; vegetation low red, red-edge rise (B05 -> B07) to a NIR plateau, SWIR water
  absorption (conifers darker than broadleaf); green crop the brightest NIR; bare soil rising
  monotonically into SWIR; impervious surface bright and flat.  Per parcel: vegetation vigour (crop
  stage, grazing: scales the red-edge/NIR rise) and soil moisture (darkens soil), so parcel
  boundaries show.  Per scene: illumination/atmosphere gain (+-10 %).  Per pixel: crown texture
  (broad-leaved crowns wider than conifer crowns), roofs.  20 m bands are averaged over 2x2 pixels
  and 60 m bands over 4x4 (the coarser ground sampling), B10 (cirrus) is near zero at the surface.
  Sensor noise: Gaussian with sigma = 0.002 + reflectance / 150 (SNR ~150 at typical radiance),
  times ``snr_scale``.
* **Sentinel-1-like SAR (VV, VH backscatter sigma0 in dB).**  Per-material mean sigma0: water very
  dark (specular; VV -21, VH -28 dB, +-3 dB with wind roughening), forest bright in VH (volume
  scattering), crop/grass intermediate, bare soil dark-ish, urban brightest in VV (double bounce)
  with strong point scatterers.  Per parcel: crop type / growth stage / row direction (1.5 dB), soil
  moisture and roughness (2 dB), grazing (1 dB), so the parcel geometry the optical sensor sees is
  in the backscatter too.  Per scene: incidence-angle offset (N(0, 1) dB).  Per pixel: 1 dB natural
  heterogeneity, then multiplicative speckle: the linear intensity times a Gamma(ENL, 1/ENL) variate
  (multi-looked intensity; ENL ~4.4 for IW GRD), then back to dB.  Broadleaf and conifer overlap in
  backscatter and speckle hides texture, so SAR is the weaker modality, as in the real archives.
* **Unpaired, semantically coherent.**  Every institution draws scenes from the same class-conditional
  distribution but with its own random stream: no scene is observed by two institutions.
  ``data.paired=true`` renders the same scenes for every institution (the paired-data reference).
* **An unrelated modality** (``objects``, Table 2's ImageNette role): RGB pictures of six shapes
  whose label indices coincide with the land-cover classes but share none of their meaning.
* **Regions** (scene metadata ``region``: boreal, temperate, mediterranean).  Every scene gets a
  region drawn from a fixed class-conditional prevalence table (``scenes.REGION_PREVALENCE``:
  conifer stands mostly boreal, arable land and urban fabric leaning mediterranean, pastures
  temperate), from a random stream of its own, so drawing it changes no other number.  A region
  also acts on the pixels, with strength ``data.region_effect`` (None = 1 for a partitioned pool,
  0 otherwise, so the default data are what they always were): phenology scales vegetation's
  red-edge/NIR rise (boreal 0.85, temperate 1, mediterranean 0.80 -- short season, summer drought),
  soil brightness scales bare soil (0.85 wet organic, 1, 1.25 dry), and soil moisture shifts the
  backscatter of soil, crop and grass (+1, 0, -1.5 dB).  A natural partition by region thus skews
  both the labels and the look of each institution's data, as countries do in the real archives.
* **Institutions.**  Each institution draws its own scenes from its own random stream, seeded by its
  name (two institutions of one sensor never share a scene).  A partitioned modality's pool is
  generated as the institution named after the modality would be (so with ``region_effect=0`` it is
  exactly that data) and its rows are cut among ``<modality>_0 ..`` by :mod:`uml_fed.data.partition`.

Why the scenes are built this way: real sensors share spatial structure (parcel edges, street grids,
coasts, crowns) that a backbone's later blocks see, besides their per-pixel spectra; the parcel and
field maps, per-parcel offsets in both sensors, crown sizes and hedgerows put that shared structure in,
so that what a shared backbone learns from one sensor can be of use to the other.  SAR is the
data-limited modality (its unimodal accuracy rises with training size: ``uml-fed experiment fig3``).
Whether UML lifts it, and by how much, is measured, not assumed (docs/results/); nothing here was
fitted to make the method win.

Everything is deterministic given ``seed`` and the institution's (or pool's) name.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ....config import DataConfig
from ...core import (
    SPLITS,
    DataError,
    Institution,
    InstitutionSpec,
    Split,
    check_fits,
    find,
    normalize_institution,
    unit_of,
)
from ...partition import Pool, split_parts
from ..base import Source
from ..registry import register
from .render import (
    BANDS_OF_KIND,
    OBJECT_BANDS,
    S1_BANDS,
    S2_BANDS,
    SENSOR_KIND,
    SENSORS,
    render,
    render_objects,
    render_optical,
    render_sar,
)
from .scenes import CLASSES, GRASS, MATERIALS, REGIONS, SOIL, WATER, draw_regions, material_maps, scenes, smooth_field

__all__ = [
    "CLASSES", "GRASS", "MATERIALS", "OBJECT_BANDS", "REGIONS", "S1_BANDS", "S2_BANDS", "SENSORS", "SOIL", "WATER",
    "SyntheticSource", "load_synthetic", "material_maps", "render_objects", "render_optical", "render_sar",
    "smooth_field",
]  # fmt: skip


PIXEL_SIZE_M = 10.0  # every synthetic pixel is a 10 m ground cell (Sentinel-2's finest bands)


def _stable_seed(*parts: object) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


@register
class SyntheticSource(Source):
    """The embedded source (``data.source=synthetic``): its sensors, their bands, its scene metadata,
    and the generator that renders its institutions."""

    name = "synthetic"
    meta_columns = ("region",)
    sensors = SENSORS

    def __init__(self, data: DataConfig) -> None:
        self.data = data

    @classmethod
    def from_config(
        cls, d: DataConfig, root: str | Path | None = None, modalities: Sequence[str] | None = None
    ) -> SyntheticSource:
        return cls(d)  # generated: no root, every sensor always at hand

    def load(
        self, d: DataConfig, seed: int, specs: list[InstitutionSpec], only: str | None = None
    ) -> list[Institution]:
        return load_synthetic(d, seed, specs, only)

    def bands_of(self, sensor: str) -> tuple[str, ...]:
        if sensor not in SENSORS:
            raise DataError(f"unknown modality {sensor!r}; the synthetic source has {sorted(SENSORS)}")
        bands = tuple(self.data.bands.get(sensor, SENSORS[sensor])) if self.data.bands else tuple(SENSORS[sensor])
        self.check_bands(sensor, bands, f"data.bands.{sensor}")
        return bands

    def check_bands(self, sensor: str, bands: Sequence[str], key: str) -> None:
        if sensor not in SENSORS:
            raise DataError(f"unknown modality {sensor!r}; the synthetic source has {sorted(SENSORS)}")
        allowed = BANDS_OF_KIND[SENSOR_KIND[sensor]]
        for b in bands:
            if b not in allowed:
                raise DataError(f"{b!r} is not a band of synthetic sensor {sensor!r} (bands: {allowed})")
        if not bands:
            raise DataError(f"{key} is empty")


def load_synthetic(
    data: DataConfig, seed: int, specs: list[InstitutionSpec], only: str | None = None
) -> list[Institution]:
    """Generate (deterministically) every institution of ``specs``, or just ``only``.

    Unpaired (default): every institution (or partitioned pool) draws its own scenes from its own
    random stream.  ``data.paired``: every institution observes the SAME scenes (ids ``<split>-<i>``),
    rendered by its own sensor with its own noise -- the paired-data reference only.
    """
    if data.classes and list(data.classes) != CLASSES:
        raise DataError(f"the synthetic source has the classes {CLASSES}; data.classes={list(data.classes)} differs")
    if data.patch_size < 8:
        raise DataError(f"data.patch_size={data.patch_size}: synthetic scenes need at least 8 px")
    pools: dict[str, dict[str, Split]] = {}
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    out = []
    for spec in find(specs, only):
        unit = unit_of(spec)
        if unit not in pools:
            pools[unit] = _generate(unit, spec, data, seed)
        splits = pools[unit]
        if spec.part >= 0:
            if unit not in parts:
                parts[unit] = _cut(splits, data, seed, unit, [s.name for s in specs if unit_of(s) == unit])
            splits = {s: _rows(splits[s], idx) for s, idx in parts[unit][spec.part].items()}
        inst = Institution(
            spec.name, list(spec.bands), list(CLASSES), splits, source="synthetic", modality=spec.modality,
            pixel_size_m=PIXEL_SIZE_M,
        )  # fmt: skip
        out.append(normalize_institution(inst, constant_bands=data.constant_bands))
    return out


def _generate(name: str, spec: InstitutionSpec, data: DataConfig, seed: int) -> dict[str, Split]:
    """The scenes of institution (or pool) ``name`` as ``spec``'s sensor records them, split by split."""
    effect = data.region_effect if data.region_effect is not None else float(spec.part >= 0)
    splits = {}
    for split, per_class in zip(SPLITS, data.split_sizes(name)):
        check_fits(
            f"synthetic {name} {split}: data.patch_size={data.patch_size}",
            (per_class * len(CLASSES), len(spec.bands) + 2, data.patch_size, data.patch_size),
            8,  # the int64 scene maps and the float32 bands of one split at once
            "lower data.patch_size or the split sizes",
        )
        if data.paired:
            maps, seg, y = scenes(
                per_class, data.patch_size, np.random.default_rng(_stable_seed(seed, split)), data.mixing
            )
            rng = np.random.default_rng(_stable_seed(seed, name, split, "sensor"))
            ids = [f"{split}-{i}" for i in range(len(y))]
            region = draw_regions(y, np.random.default_rng(_stable_seed(seed, split, "region")))
        else:
            rng = np.random.default_rng(_stable_seed(seed, name, split))
            maps, seg, y = scenes(per_class, data.patch_size, rng, data.mixing)
            ids = [f"{name}-{split}-{i}" for i in range(len(y))]
            region = draw_regions(y, np.random.default_rng(_stable_seed(seed, name, split, "region")))
        images = render(
            spec.sensor, list(spec.bands), maps, seg, y, rng,
            enl=data.enl, snr_scale=data.snr_scale, region=region, effect=effect,
        )  # fmt: skip
        splits[split] = Split(images, y, ids, {"region": [REGIONS[r] for r in region]})
    return splits


def _cut(
    pool: dict[str, Split], data: DataConfig, seed: int, unit: str, names: list[str]
) -> list[dict[str, np.ndarray]]:
    """The pool's rows (all splits) partitioned; per part, the indices into each split."""
    labels = np.concatenate([pool[s].labels for s in SPLITS])
    split_of = [s for s in SPLITS for _ in range(len(pool[s]))]
    meta = {"region": [r for s in SPLITS for r in pool[s].meta["region"]]}
    offset = dict(zip(SPLITS, np.cumsum([0] + [len(pool[s]) for s in SPLITS[:-1]])))
    by_part = split_parts(Pool(unit, labels, split_of, meta), data.partition, seed, names)
    return [{s: idx - offset[s] for s, idx in part.items()} for part in by_part]


def _rows(split: Split, idx: np.ndarray) -> Split:
    return Split(
        split.images[idx],
        split.labels[idx],
        [split.ids[i] for i in idx],
        {k: [v[i] for i in idx] for k, v in split.meta.items()},
    )
