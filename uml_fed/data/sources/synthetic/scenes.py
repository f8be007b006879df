"""Synthetic scenes: land-cover classes as maps of surface materials and parcels, and the regions
scenes come from (see :mod:`uml_fed.data.synthetic` for the physical assumptions)."""

from __future__ import annotations

import numpy as np

from ...core import DataError

CLASSES = ["Arable land", "Broad-leaved forest", "Coniferous forest", "Marine waters", "Pastures", "Urban fabric"]
MATERIALS = ["water", "broadleaf", "conifer", "crop", "soil", "grass", "urban"]
WATER, BROADLEAF, CONIFER, CROP, SOIL, GRASS, URBAN = range(7)


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


def material_maps(
    cls: int, n: int, size: int, rng: np.random.Generator, mixing: float
) -> tuple[np.ndarray, np.ndarray]:
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


def scenes(
    per_class: int, size: int, rng: np.random.Generator, mixing: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_class`` scenes of every class: material maps, parcel maps and labels (class by class)."""
    drawn = [material_maps(cls, per_class, size, rng, mixing) for cls in range(len(CLASSES))]
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    return np.concatenate([d[0] for d in drawn]), np.concatenate([d[1] for d in drawn]), labels


REGIONS = ["boreal", "temperate", "mediterranean"]
# P(region | class), rows in CLASSES order: conifer stands are mostly boreal, arable land and urban
# fabric lean south, pastures and broad-leaved forest are temperate.  A natural partition by region
# therefore skews labels as real countries do, and the regions' phenology shifts the pixels.
REGION_PREVALENCE = np.array(
    [
        [0.10, 0.45, 0.45],  # Arable land
        [0.15, 0.60, 0.25],  # Broad-leaved forest
        [0.70, 0.20, 0.10],  # Coniferous forest
        [0.30, 0.30, 0.40],  # Marine waters
        [0.30, 0.55, 0.15],  # Pastures
        [0.15, 0.40, 0.45],  # Urban fabric
    ]
)


def draw_regions(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A region index (into REGIONS) per scene, drawn from its class's row of REGION_PREVALENCE."""
    cdf = np.cumsum(REGION_PREVALENCE[labels], axis=1)
    return (rng.uniform(size=(len(labels), 1)) > cdf[:, :-1]).sum(axis=1)
