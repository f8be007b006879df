"""What a data source is: :class:`Source`, the interface every source implements (the synthetic
generator and the archive readers alike), and the types readers describe an archive with (a sensor,
a scene, a scan).

A source registers itself with :func:`.registry.register` under its ``name`` (``data.source``); the
data package builds it from the config (:meth:`Source.from_config`), derives the institutions'
specs from it (band names per sensor, scene metadata for natural partitions) and asks it to
:meth:`~Source.load` them.  Archive readers derive from :class:`.archive.RealSource`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...config import DataConfig

from ..core import DataError, Institution, InstitutionSpec


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


class Source:
    """The interface of every source: built from the data config, it names its sensors' bands and
    loads the institutions of a list of specs."""

    name: str = ""  # the data.source value it registers under
    meta_columns: tuple[str, ...] = ()  # scene metadata a natural partition can split by

    @classmethod
    def from_config(
        cls, d: DataConfig, root: str | Path | None = None, modalities: Sequence[str] | None = None
    ) -> Source:
        """The source for ``d`` (``root`` and ``modalities`` default to ``d``'s)."""
        raise NotImplementedError

    def bands_of(self, sensor: str) -> tuple[str, ...]:
        """The band names of ``sensor`` in order (``()``: not known on this machine)."""
        raise NotImplementedError

    def check_bands(self, sensor: str, bands: Sequence[str], key: str) -> None:
        """``bands`` are distinct bands of ``sensor``; ``key`` names the config entry they came from."""
        raise NotImplementedError

    def load(
        self, d: DataConfig, seed: int, specs: list[InstitutionSpec], only: str | None = None
    ) -> list[Institution]:
        """The institutions of ``specs`` (or just ``only``), normalised; ``specs`` are all of the run's,
        so that loading one institution deals out the same disjoint scenes as loading them all."""
        raise NotImplementedError
