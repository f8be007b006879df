"""What an archive reader is: its sensors, its scenes, and the base class every reader derives from.

Readers (:mod:`.bigearthnet`, :mod:`.sen12ms`, :mod:`.eurosat`, :mod:`.folder`) subclass
:class:`RealSource` and register themselves with :func:`uml_fed.data.registry.register`; nothing here
imports them.  A reader takes explicit arguments (root, sensors, bands, classes, resize and its own
options), validates them before any I/O, scans the archive into :class:`Scene` objects and decodes
one patch at a time; the pipeline (:mod:`.pipeline`) does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError


class MissingDataError(DataError, FileNotFoundError):
    """A dataset root, band file or label file is absent; the message names the path and the layout."""


@dataclass(frozen=True)
class Sensor:
    """One modality of a source: band names in canonical order, on-disk dtype, output side, stats."""

    bands: tuple[str, ...]
    dtype: str | None  # expected on-disk dtype (None = any, converted to float32)
    size: int  # output patch side in pixels (before data.resize)
    store: str = "float32"  # dtype the decode-once cache keeps
    mean: dict[str, float] = field(default_factory=dict)  # published per-band mean (raw units)
    std: dict[str, float] = field(default_factory=dict)  # published per-band std


@dataclass(frozen=True)
class Scene:
    """One place on the ground: the unit that must not be shared by two institutions (unpaired)."""

    id: str
    label: str
    files: dict[str, str]  # sensor -> path relative to the root (a patch folder or a file)
    meta: dict[str, str] = field(default_factory=dict)  # e.g. country, tile, roi (natural partitions)


@dataclass
class ScanResult:
    scenes: list[Scene]
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> number of scenes left out
    counts: dict[str, int] = field(default_factory=dict)  # other tallies for the report, e.g. nodata label pixels


class RealSource:
    """Base class of the archive readers (torchgeo style: bands and statistics are class attributes).

    Subclasses set ``name``, ``sensors``, ``classes`` (default, the paper's), ``all_classes`` (the
    nomenclature), ``layout``, ``meta_columns`` (scene metadata for natural partitions) and
    ``options`` (their own keyword arguments, named as the ``data.*`` keys they come from), and
    implement :meth:`scan_inputs`, :meth:`scan` and :meth:`read`.
    """

    name: str = ""
    coregistered: bool = True  # every scene has every sensor (the archives): allocation ignores file presence
    sensors: dict[str, Sensor] = {}
    classes: tuple[str, ...] = ()
    all_classes: tuple[str, ...] = ()
    layout: str = ""
    meta_columns: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path | None,
        *,
        modalities: Sequence[str] = (),
        bands: Mapping[str, Sequence[str]] | None = None,
        classes: Sequence[str] = (),
        resize: int = 0,
    ) -> None:
        if not root:
            raise MissingDataError(
                f"{self.name}: data.root is not set; pass data.root=/path/to/the/archive. Expected layout:\n{self.layout}"
            )
        self.root = Path(str(root)).expanduser()
        self.modalities = list(modalities)
        self.bands = {m: list(b) for m, b in dict(bands or {}).items()}
        self.chosen_classes = list(classes)
        self.resize = int(resize or 0)
        if self.resize < 0:
            raise DataError(f"data.resize={self.resize} must be >= 0 (0 = native patch size)")
        self.validate()

    # -- validation (no I/O) -------------------------------------------------------------------------
    def validate(self) -> None:
        for m in self.modalities:
            if m not in self.sensors:
                raise DataError(f"{m!r} is not a modality of {self.name}; choose from {sorted(self.sensors)}")
        for m, bands in self.bands.items():
            if m not in self.sensors:
                raise DataError(
                    f"data.bands names {m!r}, which is not a modality of {self.name} ({sorted(self.sensors)})"
                )
            self.check_bands(m, bands, f"data.bands.{m}")
        for c in self.chosen_classes:
            if self.all_classes and c not in self.all_classes:
                raise DataError(f"{c!r} is not a class of {self.name}; its classes are {list(self.all_classes)}")

    def check_bands(self, sensor: str, bands: Sequence[str], key: str) -> None:
        """``bands`` are distinct bands of ``sensor`` (``key`` names the config entry they came from)."""
        for b in bands:
            if b not in self.sensors[sensor].bands:
                raise DataError(
                    f"{b!r} is not a band of {self.name} {sensor}; its bands are {list(self.sensors[sensor].bands)}"
                )
        if len(set(bands)) != len(bands) or not bands:
            raise DataError(f"{key}={list(bands)} must list distinct bands, at least one")

    def check_root(self, modalities: list[str] | None = None) -> None:
        """The root (and, in subclasses, the folders of ``modalities``, default all) exist."""
        if not self.root.is_dir():
            raise MissingDataError(
                f"{self.name}: data.root {str(self.root)!r} does not exist or is not a folder. Expected layout:\n{self.layout}"
            )

    # -- interface -----------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        return self.chosen_classes or list(self.classes)

    def bands_of(self, sensor: str) -> tuple[str, ...]:
        chosen = self.bands.get(sensor)
        return tuple(chosen) if chosen else self.sensors[sensor].bands

    def out_size(self, sensor: str) -> int:
        return self.resize or self.sensors[sensor].size

    def native_size(self, side: int) -> tuple[int, int] | None:
        """The H x W a file must have (``side`` x ``side``), or ``None`` under ``data.resize``, which
        resamples every patch, whatever its size, to ``data.resize`` x ``data.resize``."""
        return None if self.resize else (side, side)

    def scan_options(self) -> dict[str, Any]:
        """Options that change the scan result (besides the files)."""
        return {}

    def scan_inputs(self) -> list[str]:
        """Root-relative files whose (name, size, mtime) fingerprint the scan (cheap: listing only)."""
        raise NotImplementedError

    def scan(self) -> ScanResult:
        raise NotImplementedError

    def read(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        """Decode one patch: ``C x S x S`` array in the sensor's store dtype + the files it came from."""
        raise NotImplementedError

    def paths(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> list[Path]:
        """The files :meth:`read` opens for this patch (recorded for skipped patches too)."""
        rel = scene.files.get(sensor)
        return [self.root / rel] if rel else []

    def published_stats(self, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        s = self.sensors[sensor]
        missing = [b for b in bands if b not in s.mean]
        if missing:
            raise DataError(
                f"{self.name} {sensor}: no published statistics for band(s) {missing}; "
                "use data.normalization=train (statistics of the institution's own training split)"
            )
        return (
            np.array([s.mean[b] for b in bands], dtype=np.float32),
            np.array([s.std[b] for b in bands], dtype=np.float32),
        )
