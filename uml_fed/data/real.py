"""The real-archive entry points under their historical import path (``uml_fed.data.real``).

The code lives in :mod:`.pipeline` (scan -> allocate -> partition -> decode -> cache -> normalise),
:mod:`.source` (reader base types), :mod:`.registry` and :mod:`.geotiff`; no reader imports this module.
"""

from .pipeline import build_real, load_real, scene_ids
from .source import MissingDataError, Scene

__all__ = ["MissingDataError", "Scene", "build_real", "load_real", "scene_ids"]
