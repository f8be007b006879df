"""Throughput and memory of ``uml-fed map`` on a generated scene of at least 10,000 x 10,000 pixels.

The scene carries the checkpoint's bands (uint16, nodata 0, 10 m, UTM) filled with random values
(throughput does not depend on what the pixels show; the known-cover mosaic of ``uml-fed scene``
takes minutes to render at this size).  Each stride is mapped in a fresh process; printed per
stride: windows, seconds, windows/s, pixels/s and the process's peak RSS, beside the scene's size
at float32, on the device given (``auto``: the GPU when there is one).

    python scripts/bench_map.py CHECKPOINT [--size 10000] [--strides 32 16] [--device auto] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from uml_fed.data.sources.synthetic.mosaic import write_noise_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--strides", type=int, nargs="+", default=None, help="default: the patch, half the patch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--keep", type=Path, default=None, help="write the scene and maps here instead of a temp dir")
    args = ap.parse_args()

    import torch

    from uml_fed.results import read_checkpoint

    payload = read_checkpoint(args.checkpoint)
    bands, patch = list(payload["bands"]), int(payload["patch_size"])
    strides = args.strides or [patch, patch // 2]
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        scene = where / "bench_scene.tif"
        write_noise_scene(scene, bands, args.size)
        float_mb = args.size**2 * len(bands) * 4 / 2**20
        print(f"scene {args.size} x {args.size} x {len(bands)} bands ({float_mb:.0f} MB at float32), patch {patch}, "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")  # fmt: skip
        print(
            f"{'stride':>6} {'windows':>9} {'seconds':>8} {'windows/s':>10} {'pixels/s':>12} {'peak RSS MB':>11} device"
        )
        for stride in strides:
            code = textwrap.dedent(f"""
                import json
                from dataclasses import asdict
                from uml_fed.mapping import MapOptions, map_scene
                opt = MapOptions(stride={stride}, batch_size={args.batch_size}, tile={args.tile},
                                 device={args.device!r}, progress=False)
                print(json.dumps(asdict(map_scene({args.checkpoint!r}, [{str(scene)!r}],
                                                   {str(where / f"bench_map_s{stride}.tif")!r}, opt))))
            """)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            if out.returncode:
                sys.exit(f"stride {stride}: {out.stderr.strip().splitlines()[-1]}")
            s = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{stride:>6} {s['windows']:>9} {s['seconds']:>8.1f} {s['windows_per_s']:>10.1f} "
                  f"{s['pixels_per_s']:>12.0f} {s['peak_rss_mb']:>11.0f} {s['device']}")  # fmt: skip


if __name__ == "__main__":
    main()
