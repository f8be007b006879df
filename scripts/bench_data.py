"""Decode-once cache benchmark: build time and size, cached-load time, loader vs training-step throughput.

    python scripts/bench_data.py                       # EuroSAT layout 3000 scenes, BigEarthNet v1 1000 scenes
    python scripts/bench_data.py --eurosat 300 --ben 120 --out /tmp/bench   # quicker

Writes the fixtures with the package's writer (``uml_fed.data.sources.fixtures``), builds the cache with
``build_real`` and then measures (1) a cached reload, (2) batches of 32 read from the mmap'd ``.npy``
cache into float32 torch tensors, (3) the training step (forward + backward + AdamW) of
``uml_fed.model.UMLModel`` (width 16, the CPU default) on batches of the same shape.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from uml_fed.config import DataConfig, ModelConfig
from uml_fed.data.sources import fixtures
from uml_fed.data.sources.archive import build_real
from uml_fed.data.specs import data_specs


def loader_throughput(cache_dir: str, batch: int = 32, seconds: float = 2.0) -> float:
    x = np.load(Path(cache_dir) / "train.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = np.sort(rng.choice(x.shape[0], size=min(batch, x.shape[0]), replace=False))
        xb = torch.from_numpy(np.asarray(x[idx], dtype=np.float32))
        n += xb.shape[0]
    return n / (time.perf_counter() - t0)


def step_throughput(
    channels: int, side: int, classes: int, stem: str, batch: int = 32, steps: int = 5
) -> tuple[float, str]:
    try:
        from uml_fed.model import UMLModel

        model = UMLModel({"m": channels}, classes, ModelConfig(width=16, stem=stem))
        fwd, what = (lambda x: model(x, "m")), f"uml_fed.model.UMLModel width 16 stem {stem}"
    except ImportError:  # model not written yet: a stand-in of the same width
        import torch.nn as nn

        model = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, classes),
        )
        fwd, what = model, "stand-in conv net (uml_fed.model missing)"
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(batch, channels, side, side), torch.randint(0, classes, (batch,))
    model.train()
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(fwd(x), y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0), what


def bench(name: str, source: str, root: Path, write_kw: dict, cfg_kw: dict, n_classes: int) -> dict:
    t0 = time.perf_counter()
    fixtures.write_fixture(source, root, **write_kw)
    t_write = time.perf_counter() - t0
    cfg = DataConfig(source=source, root=str(root), cache_dir=str(root / "cache"), **cfg_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        insts, rep = build_real(cfg, 0, data_specs(cfg), load=False)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        insts, rep2 = build_real(cfg, 0, data_specs(cfg))
        t_reload = time.perf_counter() - t0
    out = {
        "fixture_write_s": round(t_write, 2),
        "cache_build_s": round(t_build, 2),
        "cached_load_s": round(t_reload, 2),
    }
    for inst in insts:
        r = rep2["institutions"][inst.name]
        scenes = sum(len(s) for s in inst.splits.values())
        side = inst.split("train").images.shape[-1]
        stem = "large" if side > 64 else "small"
        step, what = step_throughput(inst.in_channels, side, n_classes, stem)
        out[inst.name] = {
            "scenes": scenes,
            "shape": list(inst.split("train").images.shape[1:]),
            "cache_MiB": round(r["cache_bytes"] / 2**20, 1),
            "loader_img_per_s": round(loader_throughput(r["cache_dir"])),
            "train_step_img_per_s": round(step, 1),
            "model": what,
        }
    out["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    out["torch_threads"] = torch.get_num_threads()
    print(name, json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eurosat", type=int, default=3000, help="EuroSAT scenes (10 classes; rgb + s1 files each)")
    ap.add_argument("--ben", type=int, default=1000, help="BigEarthNet v1 scenes (6 classes; 12 S2 + 2 S1 files each)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        pc = a.eurosat // 10
        half = pc // 2  # two institutions, disjoint scenes: each gets half of every class
        bench("eurosat_s1_rgb", "eurosat", work / "eurosat", dict(per_class=pc, modalities=("rgb", "s1")),
              dict(modalities=["s1", "rgb"], train_per_class=half - 2 * (half // 5), val_per_class=half // 5,
                   test_per_class=half // 5), 10)  # fmt: skip
        pc = a.ben // 6
        half = pc // 2
        bench("bigearthnet_v1", "bigearthnet_v1", work / "ben", dict(per_class=pc, multi_label=0, snow=0, cloud=0),
              dict(modalities=["s1", "s2"], train_per_class=half - 2 * (half // 5), val_per_class=half // 5,
                   test_per_class=half // 5), 6)  # fmt: skip
    finally:
        if a.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
