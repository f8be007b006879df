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

Everything is deterministic given ``seed`` and the institution's name.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..config import DataConfig
from .base import SPLITS, DataError, Institution, Split, normalize_institution

CLASSES = ["Arable land", "Broad-leaved forest", "Coniferous forest", "Marine waters", "Pastures", "Urban fabric"]
MATERIALS = ["water", "broadleaf", "conifer", "crop", "soil", "grass", "urban"]
WATER, BROADLEAF, CONIFER, CROP, SOIL, GRASS, URBAN = range(7)

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_GSD = {"B01": 60, "B09": 60, "B10": 60, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20, "B12": 20}
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


def _stable_seed(*parts: object) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


def smooth_field(rng: np.random.Generator, n: int, size: int, length: float) -> np.ndarray:
    """n standardised Gaussian random fields (size x size) with correlation length ``length`` px."""
    noise = rng.standard_normal((n, size, size))
    k = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    kernel = np.exp(-2.0 * (np.pi * length) ** 2 * k)
    f = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(size, size))
    f -= f.mean(axis=(1, 2), keepdims=True)
    f /= f.std(axis=(1, 2), keepdims=True) + 1e-12
    return f


def _quantile_mask(field: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Per scene, the top ``fraction`` of the field's pixels."""
    n = field.shape[0]
    flat = np.sort(field.reshape(n, -1), axis=1)
    k = np.clip(np.floor((1.0 - np.clip(fraction, 0.0, 1.0)) * flat.shape[1]).astype(np.int64), 0, flat.shape[1] - 1)
    thr = flat[np.arange(n), k]
    mask = field >= thr[:, None, None]
    mask[np.asarray(fraction) <= 0] = False
    return mask


def _coords(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Rotated along-track coordinate u for each scene (random orientation)."""
    theta = rng.uniform(0, np.pi, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return xx[None] * np.cos(theta)[:, None, None] + yy[None] * np.sin(theta)[:, None, None]


NSEG = 64  # parcel/field ids per scene (ids wrap around; neighbours almost never share one)


def _voronoi(n: int, size: int, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Irregular fields: each pixel belongs to its nearest of ~(size / cell)^2 random seed points."""
    k = int(np.clip(round((size / cell) ** 2), 2, NSEG))
    pts = rng.uniform(0, size, (n, k, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    d = (yy[None, None] - pts[:, :, 0, None, None]) ** 2 + (xx[None, None] - pts[:, :, 1, None, None]) ** 2
    return d.argmin(axis=1)


def _boundaries(seg: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour lies in another parcel."""
    edge = np.zeros(seg.shape, dtype=bool)
    edge[:, :, :-1] |= seg[:, :, :-1] != seg[:, :, 1:]
    edge[:, :-1, :] |= seg[:, :-1, :] != seg[:, 1:, :]
    return edge


def material_maps(cls: int, n: int, size: int, rng: np.random.Generator, mixing: float) -> tuple[np.ndarray, np.ndarray]:
    """n material maps and n parcel maps (both n x size x size, int) for land-cover class ``cls``.

    The parcel map gives every pixel the id (0..NSEG-1) of the field, parcel, block or stand it lies
    in; sensors vary crop stage, soil moisture and vigour per parcel, so parcel geometry shows in both.
    """
    m = np.empty((n, size, size), dtype=np.int64)
    seg = np.zeros((n, size, size), dtype=np.int64)
    if cls == 0:  # Arable land: long parallel parcels, each crop, bare soil or ley grass
        u = _coords(n, size, rng)
        width = rng.uniform(3.0, 8.0, n)[:, None, None]
        seg[:] = np.floor(u / width + rng.uniform(0, 1, n)[:, None, None]).astype(np.int64) % NSEG
        kind = rng.choice([CROP, SOIL, GRASS], size=(n, NSEG), p=[0.55, 0.3, 0.15])
        m[:] = np.take_along_axis(kind, seg.reshape(n, -1), axis=1).reshape(n, size, size)
        secondary = [GRASS, BROADLEAF, URBAN]
    elif cls in (1, 2):  # forests: closed canopy with gaps
        main, other = (BROADLEAF, CONIFER) if cls == 1 else (CONIFER, BROADLEAF)
        m[:] = main
        seg[:] = _voronoi(n, size, rng, 12.0)  # stands
        gaps = _quantile_mask(smooth_field(rng, n, size, 1.5), rng.uniform(0.0, 0.15, n))
        m[gaps] = GRASS
        secondary = [other, other, GRASS, SOIL]
    elif cls == 3:  # Marine waters: open water, sometimes a coast
        m[:] = WATER
        u = _coords(n, size, rng) / size + 0.3 * smooth_field(rng, n, size, 4.0)
        coast = rng.uniform(size=n) < 0.4
        land = (u > rng.uniform(0.6, 1.2, n)[:, None, None]) & coast[:, None, None]
        land_type = rng.choice([SOIL, GRASS, URBAN], size=n)
        m[:] = np.where(land, land_type[:, None, None], m)
        seg[:] = land
        secondary = [SOIL, GRASS, URBAN]
    elif cls == 4:  # Pastures: irregular grazed fields (a few cropped) bounded by hedgerows
        seg[:] = _voronoi(n, size, rng, 10.0)
        kind = rng.choice([GRASS, CROP], size=(n, NSEG), p=[0.85, 0.15])
        m[:] = np.take_along_axis(kind, seg.reshape(n, -1), axis=1).reshape(n, size, size)
        hedge = _boundaries(seg) & (rng.uniform(size=n) < 0.7)[:, None, None]
        m[hedge] = BROADLEAF
        secondary = [SOIL, BROADLEAF, CROP]
    elif cls == 5:  # Urban fabric: street grid, impervious blocks, gardens
        m[:] = URBAN
        yy, xx = np.mgrid[0:size, 0:size]
        block = rng.integers(5, 10, n)[:, None, None]
        off = rng.integers(0, 5, (n, 2))
        bx, by = (xx[None] + off[:, 0, None, None]) // block, (yy[None] + off[:, 1, None, None]) // block
        seg[:] = (bx * 7 + by) % NSEG
        streets = ((xx[None] + off[:, 0, None, None]) % block == 0) | ((yy[None] + off[:, 1, None, None]) % block == 0)
        gardens = _quantile_mask(smooth_field(rng, n, size, 1.0), rng.uniform(0.15, 0.4, n)) & ~streets
        m[gardens] = np.where(rng.uniform(size=gardens.sum()) < 0.6, GRASS, BROADLEAF)
        secondary = [GRASS, BROADLEAF, SOIL]
    else:
        raise DataError(f"unknown synthetic class index {cls}")
    frac = np.clip(rng.uniform(0.0, 1.4 * mixing, n), 0.0, 0.6)
    mask = _quantile_mask(smooth_field(rng, n, size, rng.uniform(2.0, 5.0)), frac)
    sec = rng.choice(secondary, size=n)
    m = np.where(mask, sec[:, None, None], m)
    seg = np.where(mask, NSEG - 1, seg)
    return m, seg


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


# Per-parcel spread of backscatter (dB, 1 sigma) by material: crop type, growth stage and row
# direction (crop), soil moisture and roughness (soil), grazing/mowing (grass); little for the rest.
S1_PARCEL_DB = np.array([0.5, 0.5, 0.5, 1.5, 2.0, 1.0, 1.0])


def render_optical(
    maps: np.ndarray, seg: np.ndarray, bands: list[str], rng: np.random.Generator, snr_scale: float
) -> np.ndarray:
    """Sentinel-2-like reflectance x 10000 (float32, N x C x H x W) for the given material/parcel maps."""
    n, h, w = maps.shape
    idx = [S2_BANDS.index(b) for b in bands]
    refl = S2_REFLECTANCE[maps]  # n h w 13
    # phenology (crop stage, grazing) scales the red-edge/NIR rise above red, per parcel
    vigour = _per_parcel(rng.uniform(0.7, 1.15, (n, NSEG)), seg)
    veg = VEGETATION[maps]
    red = refl[..., 3:4]
    refl = np.where(
        (veg[..., None] & RED_EDGE_NIR[None, None, None, :]), red + (refl - red) * vigour[..., None], refl
    )
    moisture = _per_parcel(rng.uniform(0.7, 1.1, (n, NSEG)), seg)
    refl = np.where((maps == SOIL)[..., None], refl * moisture[..., None], refl)
    # crowns: broad-leaved crowns are wider than conifer crowns (texture correlation length)
    crowns = np.where(maps == BROADLEAF, smooth_field(rng, n, h, 1.2), smooth_field(rng, n, h, 0.5))
    texture = 1.0 + S2_TEXTURE[maps] * crowns
    gain = rng.uniform(0.9, 1.1, n)[:, None, None]
    out = np.empty((n, len(bands), h, w), dtype=np.float32)
    for c, b in zip(range(len(bands)), idx):
        band = refl[..., b] * texture * gain
        band = _block_mean(band, {20: 2, 60: 4}.get(S2_GSD.get(S2_BANDS[b], 10), 1))
        sigma = (0.002 + band / 150.0) * snr_scale
        band = band + sigma * rng.standard_normal(band.shape)
        out[:, c] = np.clip(band, 0.0, 1.0) * 10000.0
    return out


def render_sar(maps: np.ndarray, seg: np.ndarray, bands: list[str], rng: np.random.Generator, enl: float) -> np.ndarray:
    """Sentinel-1-like sigma0 in dB (float32, N x C x H x W) with multiplicative Gamma speckle."""
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
        db = db + rng.normal(0.0, 1.0, maps.shape)
        speckle = rng.gamma(shape=enl, scale=1.0 / enl, size=maps.shape)
        out[:, c] = np.clip(10.0 * np.log10(10.0 ** (db / 10.0) * speckle), -50.0, 10.0)
    return out


def sensor_bands(sensor: str, data: DataConfig) -> list[str]:
    if sensor not in SENSORS:
        raise DataError(f"unknown modality {sensor!r}; the synthetic source has {sorted(SENSORS)}")
    bands = list(data.bands.get(sensor, SENSORS[sensor])) if data.bands else list(SENSORS[sensor])
    allowed = BANDS_OF_KIND[SENSOR_KIND[sensor]]
    for b in bands:
        if b not in allowed:
            raise DataError(f"{b!r} is not a band of synthetic sensor {sensor!r} (bands: {allowed})")
    if not bands:
        raise DataError(f"data.bands.{sensor} is empty")
    return bands


def synthetic_institution_names(data: DataConfig) -> list[str]:
    return [name for name, _, _ in _plan(data)]


def _plan(data: DataConfig) -> list[tuple[str, str, list[str]]]:
    """(institution name, sensor, bands) for every institution of the config."""
    plan = []
    for sensor in data.modalities:
        bands = sensor_bands(sensor, data)
        if data.per_band:
            plan.extend((f"{sensor}_{b}", sensor, [b]) for b in bands)
        else:
            plan.append((sensor, sensor, bands))
    return plan


def scenes(per_class: int, size: int, rng: np.random.Generator, mixing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_class`` scenes of every class: material maps, parcel maps and labels (class by class)."""
    drawn = [material_maps(cls, per_class, size, rng, mixing) for cls in range(len(CLASSES))]
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    return np.concatenate([d[0] for d in drawn]), np.concatenate([d[1] for d in drawn]), labels


def render_objects(labels: np.ndarray, bands: list[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit RGB-like pictures of one of six shapes (disc, square, triangle, ring, cross, stripes) per
    label, at a random place, size, angle and colour on a textured background: a modality whose
    classes share the label indices with the land-cover classes but none of their meaning."""
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


def render(sensor: str, bands: list[str], maps: np.ndarray, seg: np.ndarray, labels: np.ndarray,
           rng: np.random.Generator, data: DataConfig) -> np.ndarray:
    """What one sensor records of the given scenes (the unrelated ``objects`` sensor ignores them)."""
    kind = SENSOR_KIND[sensor]
    if kind == "sar":
        return render_sar(maps, seg, bands, rng, data.enl)
    if kind == "objects":
        return render_objects(labels, bands, maps.shape[-1], rng)
    return render_optical(maps, seg, bands, rng, data.snr_scale)


def load_synthetic(data: DataConfig, seed: int, only: str | None = None) -> list[Institution]:
    """Generate (deterministically) every institution of the synthetic config, or just ``only``.

    Unpaired (default): every institution draws its own scenes from its own random stream.
    ``data.paired``: every institution observes the SAME scenes (ids ``<split>-<i>``), rendered by its
    own sensor with its own noise -- the paired-data reference only.
    """
    if data.classes and list(data.classes) != CLASSES:
        raise DataError(f"the synthetic source has the classes {CLASSES}; data.classes={list(data.classes)} differs")
    if data.patch_size < 8:
        raise DataError(f"data.patch_size={data.patch_size}: synthetic scenes need at least 8 px")
    plan = _plan(data)
    if only is not None and only not in [p[0] for p in plan]:
        raise DataError(f"unknown modality {only!r}; this data config has {[p[0] for p in plan]}")
    sizes = {name: data.split_sizes(name) for name, _, _ in plan}
    out = []
    for name, sensor, bands in plan:
        if only is not None and name != only:
            continue
        splits = {}
        for split, per_class in zip(SPLITS, sizes[name]):
            if data.paired:
                maps, seg, y = scenes(per_class, data.patch_size, np.random.default_rng(_stable_seed(seed, split)), data.mixing)
                rng = np.random.default_rng(_stable_seed(seed, name, split, "sensor"))
                ids = [f"{split}-{i}" for i in range(len(y))]
            else:
                rng = np.random.default_rng(_stable_seed(seed, name, split))
                maps, seg, y = scenes(per_class, data.patch_size, rng, data.mixing)
                ids = [f"{name}-{split}-{i}" for i in range(len(y))]
            splits[split] = Split(render(sensor, bands, maps, seg, y, rng, data), y, ids)
        inst = Institution(name=name, bands=bands, classes=list(CLASSES), splits=splits, source="synthetic")
        out.append(normalize_institution(inst))
    return out
