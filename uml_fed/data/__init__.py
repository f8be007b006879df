"""Data sources -> institutions (one modality each).  See :mod:`uml_fed.data.base` for the contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import (
    DataError,
    Institution,
    canonical_order,
    Split,
    check_institution,
    check_same_classes,
    normalize_institution,
)

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "DataError",
    "Institution",
    "Split",
    "load_institutions",
    "canonical_order",
    "check_institution",
    "check_same_classes",
    "normalize_institution",
]


def load_institutions(cfg: "Config", only: str | None = None) -> list[Institution]:
    """Build every institution of ``cfg.data`` (or just ``only``), normalised and checked.

    ``only`` is how a federated client loads its own institution and nothing else.
    """
    d = cfg.data
    check_sizes(cfg)
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
        canonical_order(inst, cfg.seed)
    check_same_classes(institutions)
    return institutions


def check_sizes(cfg: "Config") -> None:
    """``data.sizes`` names institutions of this run; paired data needs the same sizes everywhere."""
    d, names = cfg.data, institution_names(cfg)
    unknown = sorted(set(d.sizes) - set(names))
    if unknown:
        raise DataError(f"data.sizes names {unknown}, not institutions of this run: {names}")
    sizes = {n: d.split_sizes(n) for n in names}
    if d.paired and len(set(sizes.values())) > 1:
        raise DataError(f"data.paired=true needs the same split sizes at every institution, got {sizes}; drop data.sizes")


@dataclass(frozen=True)
class InstitutionSpec:
    name: str  # unique; what a deployed node's config names (node config `institution`)
    modality: str  # same modality = same bands = same projection shape: the sensor, or <sensor>_<band> per band
    sensor: str  # the source's sensor key
    bands: tuple[str, ...]
    part: int = -1  # index of its part of its modality's pool (-1: not partitioned)
    parts: int = 1


def institution_specs(cfg: "Config") -> list[InstitutionSpec]:
    """Every institution of the run, in order, without loading any data."""
    d = cfg.data
    if d.source == "synthetic":
        from .synthetic import _plan

        return [InstitutionSpec(n, n if d.per_band else s, s, tuple(b)) for n, s, b in _plan(d)]
    from .real import institution_specs as real_specs

    return [InstitutionSpec(s.name, s.name if d.per_band else s.modality, s.modality, tuple(s.bands))
            for s in real_specs(d)]


def institution_names(cfg: "Config") -> list[str]:
    """Institution names in order, without loading any data."""
    d = cfg.data
    if d.source == "synthetic":
        from .synthetic import synthetic_institution_names

        return synthetic_institution_names(d)
    from .real import real_institution_names

    return real_institution_names(d)
