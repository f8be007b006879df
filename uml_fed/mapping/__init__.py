"""Whole-scene maps from a calibrated institution checkpoint (``uml-fed map``): band matching and
windowed reads (:mod:`.scene`), window grid and blending (:mod:`.tiling`), the tiled run and its
georeferenced outputs (:mod:`.run`), the command line (:mod:`.command`)."""

from .run import MapOptions, MapSummary, map_scene
from .scene import SceneError, SceneReader, match_bands, parse_mapping

__all__ = ["MapOptions", "MapSummary", "SceneError", "SceneReader", "map_scene", "match_bands", "parse_mapping"]
