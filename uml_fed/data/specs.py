"""Config -> institutions (:class:`~uml_fed.data.core.InstitutionSpec`), before any pixel is read.

Three ways to name them, all ending in the same list of specs:

* derived (default): one institution per entry of ``data.modalities``, named after it (``s1``,
  ``s2``); with ``data.per_band`` one per band (``s2_B04``, modality ``s2_B04``);
* partitioned: ``data.partition.institutions = N > 1`` splits each (derived) modality's pool among
  ``N`` institutions ``<modality>_0 .. <modality>_<N-1>`` (:mod:`.partition`);
* explicit: ``data.institutions`` lists ``{name, modality, sensor, bands, root}``; several may share
  a sensor (each gets its own scenes).

Institutions of one modality must hold the same bands (they share a projection shape).  The source
(any registered one, :mod:`.sources`) says which sensors and bands exist; the only I/O is the folder
source's, whose band names come from its files unless ``data.bands`` names them; on a federated node
that holds only its own modality's folder the other modalities' bands are unknown: their specs hold
``bands=()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import validate_data
from .core import DataError, InstitutionSpec, size_keys
from .sources.base import Source
from .sources.registry import make_source

if TYPE_CHECKING:
    from ..config import DataConfig


def sensors_of(d: DataConfig) -> list[str]:
    """The source sensors the config reads, in order of first use."""
    if d.institutions:
        return list(dict.fromkeys(i.sensor or i.modality for i in d.institutions))
    return list(d.modalities)


def catalog(d: DataConfig) -> Source:
    """The configured source (synthetic or a reader, from the registry) for the config's sensors."""
    roots = [i.root for i in d.institutions if i.root]
    return make_source(d, root=d.root or (roots[0] if roots else None), modalities=sensors_of(d))


def data_specs(d: DataConfig, source: Source | None = None) -> list[InstitutionSpec]:
    """Every institution of ``d``, in order, validated against the source's sensors and bands."""
    validate_data(d)
    src = source or catalog(d)
    p = d.partition
    if p.institutions > 1 and p.method == "natural" and p.column not in src.meta_columns:
        raise DataError(
            f"data.partition.column={p.column!r} is not scene metadata of {src.name} "
            f"({list(src.meta_columns) or 'it has none'}); choose one of those, or data.partition.method=iid or dirichlet"
        )
    specs: list[InstitutionSpec] = []
    if d.institutions:
        for k, inst in enumerate(d.institutions):
            sensor = inst.sensor or inst.modality
            bands = tuple(inst.bands) or src.bands_of(sensor)
            src.check_bands(sensor, bands, f"data.institutions[{k}].bands")
            specs.append(InstitutionSpec(inst.name, inst.modality, sensor, bands))
    else:
        parts = d.partition.institutions
        for sensor in d.modalities:
            bands = src.bands_of(sensor)
            if d.per_band and not bands:
                raise DataError(
                    f"data.per_band names institutions after the bands of {sensor!r}, which are unknown here (its "
                    f"files are at another node); name them in data.bands.{sensor}"
                )
            groups = [(f"{sensor}_{b}", (b,)) for b in bands] if d.per_band else [(sensor, tuple(bands))]
            for modality, own in groups:
                if parts > 1:
                    specs.extend(
                        InstitutionSpec(f"{modality}_{i}", modality, sensor, own, i, parts) for i in range(parts)
                    )
                else:
                    specs.append(InstitutionSpec(modality, modality, sensor, own))
    _check(d, specs)
    return specs


def _check(d: DataConfig, specs: list[InstitutionSpec]) -> None:
    first: dict[str, InstitutionSpec] = {}
    for s in specs:
        ref = first.setdefault(s.modality, s)
        if ref.bands and s.bands and ref.bands != s.bands:  # () = held by another node, checked there
            raise DataError(
                f"institutions {ref.name!r} and {s.name!r} of modality {s.modality!r} hold different bands "
                f"{list(ref.bands)} vs {list(s.bands)}; one modality is one projection shape: give them the same "
                "bands or different modalities (data.institutions[*].modality, with sensor= the source's sensor)"
            )
    allowed = size_keys(specs)
    unknown = sorted(set(d.sizes) - set(allowed))
    if unknown:
        raise DataError(
            f"data.sizes names {unknown}, not institutions of this run: {allowed}"
            + (" (a partitioned modality's sizes are its pool's: data.sizes.<modality>)" if specs[0].part >= 0 else "")
        )
    sizes = {k: d.split_sizes(k) for k in allowed}
    if d.paired and len(set(sizes.values())) > 1:
        raise DataError(
            f"data.paired=true needs the same split sizes at every institution, got {sizes}; drop data.sizes"
        )
