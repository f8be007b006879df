"""A PNG of a class map (and of a reference label raster beside it), read decimated: a quick look,
not a product (the GeoTIFF is)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.sources.geotiff import NODATA_CLASS, class_colours


def _decimated(path: Path, side: int) -> tuple[np.ndarray, list[str]]:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as f:
        scale = max(1.0, max(f.height, f.width) / side)
        shape = (max(1, round(f.height / scale)), max(1, round(f.width / scale)))
        return f.read(1, out_shape=shape, resampling=Resampling.nearest), json.loads(f.tags().get("CLASSES", "[]"))


def _rgb(classes: np.ndarray, n: int) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[NODATA_CLASS] = (255, 255, 255)
    for i, (r, g, b, _) in class_colours(n).items():
        if i != NODATA_CLASS:
            lut[i] = (r, g, b)
    return lut[classes]


def write_png(map_path: str | Path, png: str | Path, labels: str | Path | None = None, side: int = 800) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = [("map", Path(map_path))] + ([("reference labels", Path(labels))] if labels is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 6), squeeze=False)
    names: list[str] = []
    for ax, (title, path) in zip(axes[0], panels):
        img, classes = _decimated(path, side)
        names = names or classes
        ax.imshow(_rgb(img, len(classes)), interpolation="nearest")
        ax.set_title(f"{title}: {path.name}", fontsize=9)
        ax.set_axis_off()
    colours = class_colours(len(names))
    handles = [Patch(color=np.asarray(colours[i][:3]) / 255, label=c) for i, c in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(names))), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
