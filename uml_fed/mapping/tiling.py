"""Where the windows go and how their class probabilities become per-pixel values.

A patch classifier gives one probability vector per window.  A pixel's value is the weighted mean of
the vectors of the windows that cover it, each weighted by the blending window at the pixel's place
in it: ``uniform`` (every covering window counts the same) or ``cosine`` (a separable sine bump,
``sin(pi * (i + 0.5) / P)`` per axis, so a window counts most at its centre).  Window origins are
``0, S, 2S, ...`` along each axis with a last window shifted to end at the scene's edge, so every
pixel is covered; a scene side shorter than the patch gets one window, padded beyond the edge.

Because the weights are separable, the blend of one output tile is two matrix products per class:
``acc = Wy @ (valid * P) @ Wx^T``, ``norm = Wy @ valid @ Wx^T``.
"""

from __future__ import annotations

import numpy as np

BLENDS = ("cosine", "uniform")


def origins(n: int, patch: int, stride: int) -> np.ndarray:
    """Window origins along an axis of ``n`` pixels."""
    if n <= patch:
        return np.zeros(1, dtype=np.int64)
    out = list(range(0, n - patch + 1, stride))
    if out[-1] != n - patch:
        out.append(n - patch)
    return np.asarray(out, dtype=np.int64)


def profile(patch: int, blend: str) -> np.ndarray:
    """The 1-D blending weights of a window (positive everywhere, so a pixel covered once keeps its value)."""
    if blend == "uniform":
        return np.ones(patch, dtype=np.float64)
    if blend == "cosine":
        return np.sin(np.pi * (np.arange(patch) + 0.5) / patch)
    raise ValueError(f"blend {blend!r}: one of {BLENDS}")


def weight_matrix(start: int, size: int, window_origins: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``size x len(origins)``: the weight of each window at each pixel ``start .. start + size - 1``."""
    offset = np.arange(start, start + size)[:, None] - window_origins[None, :]
    inside = (offset >= 0) & (offset < len(weights))
    return np.where(inside, weights[np.clip(offset, 0, len(weights) - 1)], 0.0)


def covering(window_origins: np.ndarray, start: int, stop: int, patch: int) -> tuple[int, int]:
    """Index range ``[a, b)`` of the windows that overlap pixels ``[start, stop)``."""
    a = int(np.searchsorted(window_origins, start - patch, side="right"))
    b = int(np.searchsorted(window_origins, stop, side="left"))
    return a, b


def blend_tile(probs: np.ndarray, used: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blended probabilities (C x h x w, float32) and the blend's weight sum (h x w; 0 = no window) of
    one tile, from the probabilities (ny x nx x C) and use flags (ny x nx) of the windows covering it."""
    v = used.astype(np.float64)
    norm = wy @ v @ wx.T
    acc = np.einsum("ya,abc,xb->cyx", wy, probs.astype(np.float64) * v[..., None], wx, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norm > 0, acc / norm, 0.0)
    return out.astype(np.float32), norm
