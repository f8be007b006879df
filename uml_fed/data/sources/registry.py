"""The sources by ``data.source`` name.  Every source registers itself with :func:`register`; the
first lookup imports every module of this package, so adding a source is one module here (plus its
``configs/data/<name>.yaml``), named nowhere else."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..core import DataError

if TYPE_CHECKING:
    from ...config import DataConfig
    from .base import Source

SOURCES: dict[str, type[Source]] = {}
T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: make a :class:`~.base.Source` known under its ``name``."""
    if not cls.name or SOURCES.get(cls.name, cls) is not cls:
        raise ValueError(f"source {cls.__name__} has no name or reuses the name {cls.name!r}")
    SOURCES[cls.name] = cls
    return cls


def _import_all() -> None:
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")


def source_class(name: str) -> type[Source]:
    if name not in SOURCES:
        _import_all()
    if name not in SOURCES:
        raise DataError(f"data.source={name!r} is not a known source; choose one of {sorted(SOURCES)}")
    return SOURCES[name]


def make_source(d: DataConfig, root: str | Path | None = None, modalities: Sequence[str] | None = None) -> Source:
    """The source of ``d.source`` built from the data config (``root`` and ``modalities`` default to ``d``'s)."""
    return source_class(d.source).from_config(d, root=root, modalities=modalities)
