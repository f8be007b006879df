"""A class map scored against a reference label raster on the same grid, tile by tile: per-pixel
accuracy over every labelled pixel and over the *interior* ones (at least ``margin`` pixels from a
change of label, where a window-based map cannot be sharp), per class and as a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..data.sources.geotiff import NODATA_CLASS
from .scene import SceneError

TILE = 1024


def _filter(x: np.ndarray, m: int, fn: Any) -> np.ndarray:
    """Square (2m+1) min or max filter of a 2-D array already padded by m on every side (separable)."""
    x = fn(sliding_window_view(x, 2 * m + 1, axis=0), axis=-1)
    return fn(sliding_window_view(x, 2 * m + 1, axis=1), axis=-1)


def score_map(map_path: str | Path, labels_path: str | Path, margin: int) -> dict[str, Any]:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(map_path) as mp, rasterio.open(labels_path) as lb:
        if (mp.height, mp.width) != (lb.height, lb.width) or not mp.transform.almost_equals(lb.transform):
            raise SceneError(
                f"labels {str(labels_path)!r} ({lb.height}x{lb.width}) are not on the grid of the map "
                f"{str(map_path)!r} ({mp.height}x{mp.width}); give a label raster of the mapped scene"
            )
        classes = json.loads(mp.tags().get("CLASSES", "[]"))
        n = len(classes)
        nodata = lb.nodata if lb.nodata is not None else NODATA_CLASS
        confusion = {"all": np.zeros((n, n), dtype=np.int64), "interior": np.zeros((n, n), dtype=np.int64)}
        unmapped = 0
        for r0 in range(0, mp.height, TILE):
            for c0 in range(0, mp.width, TILE):
                h, w = min(TILE, mp.height - r0), min(TILE, mp.width - c0)
                pred = mp.read(1, window=Window(c0, r0, w, h))
                # the halo beyond the scene's edge repeats the edge: the edge is not a change of label
                top, left = max(0, r0 - margin), max(0, c0 - margin)
                bottom, right = min(mp.height, r0 + h + margin), min(mp.width, c0 + w + margin)
                ref = lb.read(1, window=Window(left, top, right - left, bottom - top)).astype(np.int64)
                pad = ((top - (r0 - margin), r0 + h + margin - bottom), (left - (c0 - margin), c0 + w + margin - right))
                ref = np.pad(ref, pad, mode="edge")
                ref[ref == nodata] = -1
                truth = ref[margin : margin + h, margin : margin + w]
                interior = _filter(ref, margin, np.max) == _filter(ref, margin, np.min)
                labelled = (truth >= 0) & (truth < n)
                unmapped += int((labelled & (pred == NODATA_CLASS)).sum())
                mapped = labelled & (pred != NODATA_CLASS)
                for key, where in (("all", mapped), ("interior", mapped & interior)):
                    np.add.at(confusion[key], (truth[where], pred[where].astype(np.int64)), 1)
    out: dict[str, Any] = {"classes": classes, "margin_px": margin, "unmapped_labelled_pixels": unmapped}
    for key, cm in confusion.items():
        total = int(cm.sum())
        out[key] = {
            "pixels": total,
            "accuracy": round(100.0 * np.trace(cm) / total, 2) if total else None,
            "per_class": {
                c: {
                    "pixels": int(cm[i].sum()),
                    "accuracy": round(100.0 * cm[i, i] / cm[i].sum(), 2) if cm[i].sum() else None,
                }
                for i, c in enumerate(classes)
            },
            "confusion": cm.tolist(),
        }
    return out


def score_table(score: dict[str, Any]) -> str:
    """The score as a Markdown table: per class, pixels and accuracy, all and interior."""
    rows = [
        f"| class | pixels | accuracy (%) | interior pixels (>= {score['margin_px']} px from a label change) "
        "| interior accuracy (%) |",
        "|---|---|---|---|---|",
    ]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    for c in score["classes"]:
        a, i = score["all"]["per_class"][c], score["interior"]["per_class"][c]
        rows.append(f"| {c} | {a['pixels']} | {fmt(a['accuracy'])} | {i['pixels']} | {fmt(i['accuracy'])} |")
    rows.append(
        f"| **all** | {score['all']['pixels']} | {fmt(score['all']['accuracy'])} | {score['interior']['pixels']} "
        f"| {fmt(score['interior']['accuracy'])} |"
    )
    return "\n".join(rows)
