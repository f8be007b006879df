"""What each synthetic sensor records of a scene: Sentinel-2-like reflectance, Sentinel-1-like
backscatter with speckle, or the unrelated ``objects`` pictures (see :mod:`uml_fed.data.synthetic`)."""

from __future__ import annotations

import numpy as np

from ...core import DataError
from .scenes import BROADLEAF, NSEG, SOIL, URBAN, WATER, smooth_field

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_GSD = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}
# pixels of 10 m averaged into one pixel of a coarser band (60 m bands simplified to 4 x 4 = 40 m)
GSD_BLOCK = {20: 2, 60: 4}
# Surface reflectance per material (rows) at the 13 band centres (columns, S2_BANDS order).
S2_REFLECTANCE = np.array(
    [
        [0.060, 0.055, 0.045, 0.030, 0.022, 0.016, 0.013, 0.011, 0.009, 0.006, 0.001, 0.004, 0.003],  # water
        [0.030, 0.030, 0.055, 0.030, 0.085, 0.260, 0.330, 0.360, 0.370, 0.350, 0.002, 0.180, 0.085],  # broadleaf
        [0.025, 0.022, 0.040, 0.022, 0.060, 0.170, 0.210, 0.230, 0.240, 0.225, 0.002, 0.110, 0.050],  # conifer
        [0.035, 0.040, 0.075, 0.045, 0.110, 0.290, 0.370, 0.400, 0.410, 0.390, 0.003, 0.230, 0.120],  # crop
        [0.080, 0.085, 0.110, 0.140, 0.170, 0.190, 0.205, 0.220, 0.235, 0.230, 0.004, 0.330, 0.280],  # soil
        [0.040, 0.045, 0.080, 0.060, 0.110, 0.230, 0.280, 0.300, 0.310, 0.295, 0.003, 0.250, 0.150],  # grass
        [0.110, 0.120, 0.130, 0.140, 0.150, 0.160, 0.165, 0.170, 0.175, 0.165, 0.004, 0.200, 0.180],  # urban
    ],
    dtype=np.float64,
)
VEGETATION = np.array([False, True, True, True, False, True, False])
RED_EDGE_NIR = np.array([b in ("B05", "B06", "B07", "B08", "B8A", "B09") for b in S2_BANDS])
# Pixel texture amplitude per material (relative brightness variation).
S2_TEXTURE = np.array([0.04, 0.15, 0.18, 0.08, 0.10, 0.07, 0.25])

S1_BANDS = ["VV", "VH"]
S1_SIGMA0_DB = np.array(
    [[-21.0, -28.0], [-7.5, -13.0], [-8.0, -13.8], [-10.0, -16.5], [-13.0, -21.0], [-11.5, -18.5], [-4.5, -11.0]]
)

OBJECT_BANDS = ["R", "G", "B"]
SENSORS: dict[str, list[str]] = {
    "s1": S1_BANDS,
    "s2": [b for b in S2_BANDS if b != "B10"],  # 12 bands, as BigEarthNet's L2A patches
    "rgb": ["B04", "B03", "B02"],
    "objects": OBJECT_BANDS,  # an UNRELATED modality (Table 2's ImageNette role): shapes, not land cover
}
SENSOR_KIND = {"s1": "sar", "s2": "optical", "rgb": "optical", "objects": "objects"}
BANDS_OF_KIND = {"sar": S1_BANDS, "optical": S2_BANDS, "objects": OBJECT_BANDS}


def _per_parcel(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Broadcast per-(scene, parcel) values (n x NSEG) onto the parcel maps (n x H x W)."""
    n = seg.shape[0]
    return np.take_along_axis(values, seg.reshape(n, -1), axis=1).reshape(seg.shape)


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Average over factor x factor pixel blocks and replicate back (coarser ground sampling)."""
    n, h, w = x.shape
    if factor <= 1 or h % factor or w % factor:
        return x
    y = x.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return np.repeat(np.repeat(y, factor, axis=1), factor, axis=2)


# What a region does to the pixels (rows in REGIONS order: boreal, temperate, mediterranean), at
# full strength (data.region_effect=1): vegetation vigour scales the red-edge/NIR rise (short boreal
# season, mediterranean summer drought), soil brightness scales bare-soil reflectance (wet organic
# soils are dark, dry ones bright), and soil moisture shifts the backscatter of soil, crop and
# grass (dielectric constant: wet is bright in SAR).
REGION_VIGOUR = np.array([0.85, 1.0, 0.80])
REGION_SOIL = np.array([0.85, 1.0, 1.25])
REGION_SAR_DB = np.array([1.0, 0.0, -1.5])
MOIST_SENSITIVE = np.array([False, False, False, True, True, True, False])  # crop, soil, grass


def _regional(table: np.ndarray, region: np.ndarray, effect: float, neutral: float) -> np.ndarray:
    """Per scene, ``table[region]`` moved from ``neutral`` by the strength ``effect`` (n x 1 x 1)."""
    return (neutral + effect * (table[region] - neutral))[:, None, None]


# Per-parcel spread of backscatter (dB, 1 sigma) by material: crop type, growth stage and row
# direction (crop), soil moisture and roughness (soil), grazing/mowing (grass); little for the rest.
S1_PARCEL_DB = np.array([0.5, 0.5, 0.5, 1.5, 2.0, 1.0, 1.0])


def render_optical(
    maps: np.ndarray, seg: np.ndarray, bands: list[str], rng: np.random.Generator, snr_scale: float,
    region: np.ndarray | None = None, effect: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """Sentinel-2-like reflectance x 10000 (float32, N x C x H x W) for the given material/parcel maps
    (and, with ``effect`` > 0, the regions' phenology and soil shifts; no extra random draws)."""
    n, h, w = maps.shape
    idx = [S2_BANDS.index(b) for b in bands]
    refl = S2_REFLECTANCE[maps]  # n h w 13
    # phenology (crop stage, grazing) scales the red-edge/NIR rise above red, per parcel
    vigour = _per_parcel(rng.uniform(0.7, 1.15, (n, NSEG)), seg)
    if effect:
        vigour = vigour * _regional(REGION_VIGOUR, region, effect, 1.0)
    veg = VEGETATION[maps]
    red = refl[..., 3:4]
    refl = np.where((veg[..., None] & RED_EDGE_NIR[None, None, None, :]), red + (refl - red) * vigour[..., None], refl)
    moisture = _per_parcel(rng.uniform(0.7, 1.1, (n, NSEG)), seg)
    if effect:
        moisture = moisture * _regional(REGION_SOIL, region, effect, 1.0)
    refl = np.where((maps == SOIL)[..., None], refl * moisture[..., None], refl)
    # crowns: broad-leaved crowns are wider than conifer crowns (texture correlation length)
    crowns = np.where(maps == BROADLEAF, smooth_field(rng, n, h, 1.2), smooth_field(rng, n, h, 0.5))
    texture = 1.0 + S2_TEXTURE[maps] * crowns
    gain = rng.uniform(0.9, 1.1, n)[:, None, None]
    out = np.empty((n, len(bands), h, w), dtype=np.float32)
    for c, b in zip(range(len(bands)), idx):
        band = refl[..., b] * texture * gain
        band = _block_mean(band, GSD_BLOCK.get(S2_GSD.get(S2_BANDS[b], 10), 1))
        sigma = (0.002 + band / 150.0) * snr_scale
        band = band + sigma * rng.standard_normal(band.shape)
        out[:, c] = np.clip(band, 0.0, 1.0) * 10000.0
    return out


def render_sar(
    maps: np.ndarray, seg: np.ndarray, bands: list[str], rng: np.random.Generator, enl: float,
    region: np.ndarray | None = None, effect: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """Sentinel-1-like sigma0 in dB (float32, N x C x H x W) with multiplicative Gamma speckle (and,
    with ``effect`` > 0, the regions' soil-moisture shift of soil, crop and grass)."""
    n, h, w = maps.shape
    if enl <= 0:
        raise DataError(f"data.enl={enl}: the equivalent number of looks must be > 0")
    incidence = rng.normal(0.0, 1.0, n)[:, None, None]
    wind = rng.uniform(-3.0, 3.0, n)[:, None, None] * (maps == WATER)
    parcel = _per_parcel(rng.standard_normal((n, NSEG)), seg) * S1_PARCEL_DB[maps]
    scatterers = (maps == URBAN) & (rng.uniform(size=maps.shape) < 0.08)
    out = np.empty((n, len(bands), h, w), dtype=np.float32)
    for c, b in enumerate(bands):
        pol = S1_BANDS.index(b)
        db = S1_SIGMA0_DB[maps, pol] + incidence + wind + parcel + 6.0 * scatterers
        if effect:
            db = db + _regional(REGION_SAR_DB, region, effect, 0.0) * MOIST_SENSITIVE[maps]
        db = db + rng.normal(0.0, 1.0, maps.shape)
        speckle = rng.gamma(shape=enl, scale=1.0 / enl, size=maps.shape)
        out[:, c] = np.clip(10.0 * np.log10(10.0 ** (db / 10.0) * speckle), -50.0, 10.0)
    return out


def render_objects(labels: np.ndarray, bands: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit RGB-like pictures of one of ten shapes (disc, square, triangle, ring, cross, stripes,
    ellipse, diamond, two discs, half disc) per label, at a random place, size, angle and colour on a
    textured background: a modality whose classes share the label indices with the land-cover classes
    (the first six) or the digits (all ten) but none of their meaning."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1) * 2.0 - 1.0
    cx, cy = (rng.uniform(-0.3, 0.3, n)[:, None, None] for _ in range(2))
    radius = rng.uniform(0.35, 0.7, n)[:, None, None]
    theta = rng.uniform(0.0, np.pi, n)[:, None, None]
    u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / radius
    v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / radius
    r = np.hypot(u, v)
    shapes = [
        r < 1.0,
        np.maximum(np.abs(u), np.abs(v)) < 0.8,
        (v > -0.6) & (v < 1.0 - 1.8 * np.abs(u)),
        (r > 0.55) & (r < 1.0),
        ((np.abs(u) < 0.25) & (np.abs(v) < 1.0)) | ((np.abs(v) < 0.25) & (np.abs(u) < 1.0)),
        np.sin(3.0 * np.pi * u) > 0.0,
        np.hypot(u, 2.0 * v) < 1.0,
        np.abs(u) + np.abs(v) < 0.9,
        (np.hypot(u - 0.45, v) < 0.4) | (np.hypot(u + 0.45, v) < 0.4),
        (r < 1.0) & (v > 0.0),
    ]
    mask = np.choose(labels[:, None, None], shapes)
    fg, bg = rng.uniform(0, 255, (n, 3)), rng.uniform(0, 255, (n, 3))
    texture = 1.0 + 0.15 * smooth_field(rng, n, size, 2.0)
    out = np.empty((n, len(bands), size, size), dtype=np.float32)
    for c, b in enumerate(bands):
        k = OBJECT_BANDS.index(b)
        img = np.where(mask, fg[:, k, None, None], bg[:, k, None, None] * texture)
        out[:, c] = np.clip(img + rng.normal(0.0, 8.0, img.shape), 0.0, 255.0)
    return out


def render(
    sensor: str, bands: list[str], maps: np.ndarray, seg: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
    *, enl: float, snr_scale: float, region: np.ndarray, effect: float,
) -> np.ndarray:  # fmt: skip
    """What one sensor records of the given scenes (the unrelated ``objects`` sensor ignores them)."""
    kind = SENSOR_KIND[sensor]
    if kind == "sar":
        return render_sar(maps, seg, bands, rng, enl, region, effect)
    if kind == "objects":
        return render_objects(labels, bands, maps.shape[-1], rng)
    return render_optical(maps, seg, bands, rng, snr_scale, region, effect)
