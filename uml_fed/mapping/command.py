"""``uml-fed map`` and ``uml-fed scene``.

    uml-fed map CHECKPOINT SCENE... --out MAP.tif [--stride S] [--blend cosine|uniform] [--batch-size B]
        [--tile T] [--device auto|cpu|cuda] [--band NAME=FILE[:INDEX]]... [--bands B1,B2,...]
        [--probabilities P.tif] [--confidence C.tif] [--cog] [--labels LABELS.tif] [--png MAP.png]
    uml-fed scene OUT.tif --modality s1|s2|rgb --size H[xW] [--labels LABELS.tif] [--per-band] [--seed N]

``map`` classifies a whole scene (one stacked GeoTIFF/COG, or one file per band) with an institution's
calibrated checkpoint; ``--labels`` scores the map against a reference raster (per class, and away
from label borders), ``--png`` draws it (beside the labels).  ``scene`` writes a synthetic scene of
the embedded sensors with its label raster (a mosaic of the training scene types).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def map_main(argv: list[str]) -> None:
    from .picture import write_png
    from .run import MapOptions, map_scene
    from .scene import SceneError, parse_mapping
    from .score import score_map, score_table

    ap = argparse.ArgumentParser(prog="uml-fed map", description="classify a whole scene into a georeferenced map")
    ap.add_argument("checkpoint", help="a calibrated institution checkpoint (<run>/checkpoints/*.pt)")
    ap.add_argument("scene", nargs="*", help="one stacked GeoTIFF/COG, or one file per band")
    ap.add_argument("--out", required=True, help="the class map (GeoTIFF, uint8, nodata 255)")
    ap.add_argument("--stride", type=int, default=None, help="window step in pixels (default: half the patch)")
    ap.add_argument("--blend", default="cosine", help="cosine | uniform weighting of overlapping windows")
    ap.add_argument("--batch-size", type=int, default=256, help="windows per forward pass")
    ap.add_argument("--tile", type=int, default=1024, help="output tile side (multiple of 256): bounds memory")
    ap.add_argument("--device", default="auto", help="auto (GPU when there) | cpu | cuda | cuda:N")
    ap.add_argument("--band", action="append", default=[], metavar="NAME=FILE[:INDEX]", help="where a band is")
    ap.add_argument("--bands", default=None, help="band names of a stacked file without descriptions, in order")
    ap.add_argument("--min-valid", type=float, default=0.5, help="fraction of valid pixels a window needs")
    ap.add_argument("--patch-size", type=int, default=None, help="only for a checkpoint that does not record it")
    ap.add_argument("--probabilities", type=Path, default=None, help="also write per-class probabilities here")
    ap.add_argument("--confidence", type=Path, default=None, help="also write the top-class probability here")
    ap.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs (with overviews)")
    ap.add_argument("--labels", type=Path, default=None, help="score the map against this label raster")
    ap.add_argument("--margin", type=int, default=None, help="interior margin for --labels (default: the patch)")
    ap.add_argument("--png", type=Path, default=None, help="draw the map (beside --labels) into this PNG")
    ap.add_argument("--gdal-cache-mb", type=int, default=64, help="GDAL block cache (part of the memory bound)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not args.scene and not args.band:
        raise SceneError("no scene: give one stacked file or the band files (or --band NAME=FILE)")
    opt = MapOptions(
        stride=args.stride, blend=args.blend, batch_size=args.batch_size, tile=args.tile, device=args.device,
        min_valid=args.min_valid, patch_size=args.patch_size, probabilities=args.probabilities,
        confidence=args.confidence, cog=args.cog, progress=not args.no_progress, gdal_cache_mb=args.gdal_cache_mb,
    )  # fmt: skip
    order = [b.strip() for b in args.bands.split(",")] if args.bands else None
    summary = map_scene(args.checkpoint, args.scene, args.out, opt, parse_mapping(args.band), order)
    report = asdict(summary)
    if args.labels is not None:
        report["score"] = score_map(args.out, args.labels, args.margin if args.margin is not None else summary.patch)
        print(score_table(report["score"]), file=sys.stderr)
        Path(args.out).with_suffix(".score.json").write_text(json.dumps(report["score"], indent=1))
    if args.png is not None:
        report["png"] = str(write_png(args.out, args.png, args.labels))
    print(json.dumps({k: v for k, v in report.items() if k != "score"} | (
        {"accuracy": report["score"]["all"]["accuracy"], "interior_accuracy": report["score"]["interior"]["accuracy"]}
        if "score" in report else {})))  # fmt: skip


def scene_main(argv: list[str]) -> None:
    from ..data.sources.synthetic.mosaic import MosaicSpec, write_mosaic
    from .scene import SceneError

    ap = argparse.ArgumentParser(prog="uml-fed scene", description="write a synthetic scene and its label raster")
    ap.add_argument("out", type=Path, help="the scene GeoTIFF (with --per-band: OUT_<band>.tif per band)")
    ap.add_argument("--modality", default="s2", help="s1 | s2 | rgb")
    ap.add_argument("--size", default="1024", help="H or HxW in pixels (10 m each)")
    ap.add_argument("--patch", type=int, default=32, help="cell side: the checkpoint's patch size")
    ap.add_argument("--region-cells", type=int, default=4, help="mean side of a one-class region, in cells")
    ap.add_argument("--labels", type=Path, default=None, help="also write the label raster here")
    ap.add_argument("--per-band", action="store_true", help="one file per band, each at its own resolution")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        h, w = (int(v) for v in args.size.lower().split("x")) if "x" in args.size.lower() else (int(args.size),) * 2
    except ValueError:
        raise SceneError(f"--size {args.size!r}: write H or HxW in pixels, e.g. 1024 or 2048x4096") from None
    spec = MosaicSpec(args.modality, h, w, patch=args.patch, region_cells=args.region_cells, seed=args.seed)
    for path in write_mosaic(spec, args.out, args.labels, per_band=args.per_band):
        print(path)
