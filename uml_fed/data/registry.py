"""The archive readers, by ``data.source`` name.  Readers register themselves with :func:`register`;
:func:`source_class` imports the reader modules once (the only place that names them)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .base import DataError

if TYPE_CHECKING:
    from ..config import DataConfig
    from .source import RealSource

READER_MODULES = ("bigearthnet", "sen12ms", "eurosat", "folder")
SOURCES: dict[str, type[RealSource]] = {}
T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: make a :class:`~uml_fed.data.source.RealSource` known under its ``name``."""
    if not cls.name or SOURCES.get(cls.name, cls) is not cls:
        raise ValueError(f"reader {cls.__name__} has no name or reuses the name {cls.name!r}")
    SOURCES[cls.name] = cls
    return cls


def source_class(name: str) -> type[RealSource]:
    for module in READER_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    if name not in SOURCES:
        raise DataError(f"data.source={name!r} is not a known source; choose synthetic, {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def make_source(d: DataConfig, root: str | Path | None = None, modalities: Sequence[str] | None = None) -> RealSource:
    """The reader of ``d.source`` built from the data config: the one place that maps ``data.*`` keys
    onto a reader's explicit arguments (``root`` and ``modalities`` default to ``d``'s)."""
    cls = source_class(d.source)
    own = {opt: getattr(d, opt) for opt in cls.options}
    return cls(
        root if root is not None else d.root,
        modalities=list(d.modalities if modalities is None else modalities),
        bands=dict(d.bands),
        classes=list(d.classes),
        resize=int(d.resize),
        **own,
    )
