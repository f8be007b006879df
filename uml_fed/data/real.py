"""The real-archive entry points under their historical import path (``uml_fed.data.real``).

The code lives in :mod:`.pipeline` (scan -> allocate -> partition -> decode -> cache -> normalise),
:mod:`.source` (reader base types), :mod:`.registry` and :mod:`.geotiff`; no reader imports this module.
"""

from .pipeline import build_real, cache_root, load_real, normalize, scene_ids
from .registry import make_source, source_class
from .source import MissingDataError, RealSource, ScanResult, Scene, Sensor

__all__ = [
    "MissingDataError",
    "RealSource",
    "ScanResult",
    "Scene",
    "Sensor",
    "build_real",
    "cache_root",
    "load_real",
    "make_source",
    "normalize",
    "scene_ids",
    "source_class",
]
