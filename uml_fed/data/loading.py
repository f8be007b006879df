"""The config's institutions: named (no pixels read) or loaded from their source, checked and in their
canonical order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core import Institution, InstitutionSpec, canonical_order, check_institution, check_same_classes
from .specs import catalog, data_specs

if TYPE_CHECKING:
    from ..config import Config, DataConfig


def institution_specs(cfg: Config) -> list[InstitutionSpec]:
    """Every institution of ``cfg.data`` in order: name, modality, sensor, bands, part -- no pixels read.

    Raises :class:`~.core.DataError` (or :class:`~uml_fed.config.ConfigError`) naming the key and the
    remedy for names the source does not know, duplicate names, bands that differ within a modality, ...
    """
    return data_specs(cfg.data)


def institution_names(cfg: Config) -> list[str]:
    """Institution names in order, without loading any data."""
    return [s.name for s in institution_specs(cfg)]


def modality_of(cfg: Config) -> dict[str, str]:
    """Institution name -> its modality (projection group), without loading any data."""
    return {s.name: s.modality for s in institution_specs(cfg)}


def load_source(d: DataConfig, seed: int = 0, only: str | None = None) -> list[Institution]:
    """The institutions of ``d`` (or just ``only``) as their source loads them: normalised, not yet checked
    or put in their canonical order (:func:`load_institutions` does both)."""
    source = catalog(d)
    return source.load(d, seed, data_specs(d, source), only)


def load_institutions(cfg: Config, only: str | None = None) -> list[Institution]:
    """Build every institution of ``cfg.data`` (or just the one named ``only``), normalised and checked.

    ``only`` is how a federated node loads its own institution and nothing else: it reads its own
    sensor's data (and, for an archive, the shared label files, to compute the same disjoint
    allocation and partition as every other node).
    """
    institutions = load_source(cfg.data, cfg.seed, only)
    for inst in institutions:
        check_institution(inst)
        canonical_order(inst, cfg.seed)
    check_same_classes(institutions)
    return institutions
