"""Data sources -> institutions.

:mod:`.core` (what training gets), :mod:`.specs` (how the config names the institutions),
:mod:`.loading` (load them), :mod:`.partition` (a sensor's pool among institutions), :mod:`.sources`
(every source, synthetic and the archive readers, registered the same way), :mod:`.prepare` (decode an
archive once).
"""

from .core import (
    DataError,
    Institution,
    InstitutionSpec,
    Split,
    canonical_order,
    check_institution,
    check_same_classes,
    normalize_institution,
)
from .loading import institution_names, institution_specs, load_institutions, modality_of

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
