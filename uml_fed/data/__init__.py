"""Data sources -> institutions (one modality each).  See :mod:`uml_fed.data.base` for the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    ArrayDataset,
    DataError,
    Institution,
    Split,
    check_institution,
    check_same_classes,
    normalize_institution,
)

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "ArrayDataset",
    "DataError",
    "Institution",
    "Split",
    "load_institutions",
    "check_institution",
    "check_same_classes",
    "normalize_institution",
]


def load_institutions(cfg: "Config", only: str | None = None) -> list[Institution]:
    """Build every institution of ``cfg.data`` (or just ``only``), normalised and checked.

    ``only`` is how a federated client loads its own institution and nothing else.
    """
    d = cfg.data
    if d.source == "synthetic":
        from .synthetic import load_synthetic

        institutions = load_synthetic(d, seed=cfg.seed, only=only)
    else:
        from .real import load_real

        institutions = load_real(d, seed=cfg.seed, only=only)
    if only is not None and not institutions:
        raise DataError(f"unknown modality {only!r}; this data config has {list(institution_names(cfg))}")
    for inst in institutions:
        check_institution(inst)
    check_same_classes(institutions)
    return institutions


def institution_names(cfg: "Config") -> list[str]:
    """Institution names in order, without loading any data."""
    d = cfg.data
    if d.source == "synthetic":
        from .synthetic import synthetic_institution_names

        return synthetic_institution_names(d)
    from .real import real_institution_names

    return real_institution_names(d)
