"""Data sources -> institutions.  See :mod:`uml_fed.data.base` for what training gets and
:mod:`uml_fed.data.institutions` for how the config names the institutions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    DataError,
    Institution,
    InstitutionSpec,
    Split,
    canonical_order,
    check_institution,
    check_same_classes,
    normalize_institution,
)

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "DataError",
    "Institution",
    "InstitutionSpec",
    "Split",
    "canonical_order",
    "check_institution",
    "check_same_classes",
    "institution_names",
    "institution_specs",
    "load_institutions",
    "modality_of",
    "normalize_institution",
]


def institution_specs(cfg: Config) -> list[InstitutionSpec]:
    """Every institution of ``cfg.data`` in order: name, modality, sensor, bands, part -- no pixels read.

    Raises :class:`DataError` (or :class:`~uml_fed.config.ConfigError`) naming the key and the remedy
    for names the source does not know, duplicate names, bands that differ within a modality, ...
    """
    from .institutions import data_specs

    return data_specs(cfg.data)


def institution_names(cfg: Config) -> list[str]:
    """Institution names in order, without loading any data."""
    return [s.name for s in institution_specs(cfg)]


def modality_of(cfg: Config) -> dict[str, str]:
    """Institution name -> its modality (projection group), without loading any data."""
    return {s.name: s.modality for s in institution_specs(cfg)}


def load_institutions(cfg: Config, only: str | None = None) -> list[Institution]:
    """Build every institution of ``cfg.data`` (or just the one named ``only``), normalised and checked.

    ``only`` is how a federated node loads its own institution and nothing else: it reads its own
    sensor's files (and the archive's shared label files, to compute the same disjoint allocation and
    partition as every other node).
    """
    d = cfg.data
    if d.source == "synthetic":
        from .synthetic import load_synthetic

        institutions = load_synthetic(d, seed=cfg.seed, only=only)
    else:
        from .pipeline import load_real

        institutions = load_real(d, seed=cfg.seed, only=only)
    for inst in institutions:
        check_institution(inst)
        canonical_order(inst, cfg.seed)
    check_same_classes(institutions)
    return institutions
