"""Unimodal inference with a calibrated checkpoint: ``uml-fed predict CHECKPOINT IMAGE...``.

Images are GeoTIFF/PNG/JPEG (read with rasterio) or .npy, C x H x W (or N x C x H x W for .npy), in
the same physical units as the training data; they are normalised with the checkpoint's statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .results import load_checkpoint


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    if path.suffix == ".npy":
        x = np.load(path)
    else:
        import rasterio

        with rasterio.open(path) as f:
            x = f.read()
    x = np.asarray(x, dtype=np.float32)
    return x[None] if x.ndim == 3 else x


@torch.no_grad()
def predict(checkpoint: str | Path, images: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Class names and probabilities (N x classes) for raw images N x C x H x W."""
    model, meta = load_checkpoint(checkpoint)
    bands = meta["bands"]
    if images.ndim != 4 or images.shape[1] != len(bands):
        raise ValueError(
            f"checkpoint {checkpoint} is for modality {meta['modality']!r} with {len(bands)} bands {bands}; "
            f"got images of shape {images.shape}"
        )
    if not np.isfinite(images).all():
        raise ValueError("NaN/inf values in the input images")
    if meta["mean"] is not None:
        mean = np.asarray(meta["mean"], dtype=np.float32)[None, :, None, None]
        std = np.asarray(meta["std"], dtype=np.float32)[None, :, None, None]
        images = (images - mean) / std
    probs = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))), dim=1).numpy()
    return list(meta["classes"]), probs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="uml-fed predict", description=__doc__)
    ap.add_argument("checkpoint")
    ap.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    for path in args.images:
        classes, probs = predict(args.checkpoint, read_image(path))
        for i, p in enumerate(probs):
            k = int(p.argmax())
            print(json.dumps({"image": path, "index": i, "class": classes[k], "prob": round(float(p[k]), 4)}))
