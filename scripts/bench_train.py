"""Benchmark: the project's training loop against a plain PyTorch loop, same model, same tensors.

    python scripts/bench_train.py [--epochs 3] [--device auto] [--paper] [--out bench_train.json] [hydra overrides]

One institution's data (the embedded default, or the overrides; ``--paper``: ResNet-18 at width 64
on 64 px patches, Table 6's EuroSAT size of 1000 per class) is put on the device once.  Then, side by
side in one process and on one device:

* ``plain``: the reference -- a hand-written loop (randperm, index, forward, cross-entropy,
  backward, AdamW step), float32, no metrics;
* ``uml_fed``: :func:`uml_fed.train.train_one_epoch` (metrics summed on the device, read once per
  epoch) with each compute variant: fp32, bf16 autocast, channels-last, bf16 + channels-last, and
  ``torch.compile`` (with ``--compile``).

Printed: images/s, peak GPU memory, and each variant's speed as a ratio to ``plain`` fp32.  The
first epoch of every variant is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from uml_fed.config import load_config
from uml_fed.data import load_institutions
from uml_fed.model import FP32, Compute, build_unimodal
from uml_fed.train import BatchStream, make_optimizer, resolve_device, split_tensors, train_one_epoch

PAPER = [
    "model.width=64",
    "data.patch_size=64",
    "data.train_per_class=1000",
    "data.val_per_class=10",
    "data.test_per_class=10",
    "data.modalities=[s1]",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epochs(model, x, y, batch: int, epochs: int, device: torch.device) -> float:
    """The reference loop; returns seconds for ``epochs`` timed epochs after one warm-up epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    name = model.modalities[0]
    model.train()
    tic = 0.0
    for e in range(epochs + 1):
        if e == 1:
            sync(device)
            tic = time.perf_counter()
        order = torch.randperm(len(y), generator=g).to(device)
        for i in range(len(y) // batch):
            idx = order[i * batch : (i + 1) * batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx], name), y[idx]).backward()
            opt.step()
    sync(device)
    return time.perf_counter() - tic


def project_epochs(model, x, y, batch: int, epochs: int, device: torch.device) -> float:
    opt = make_optimizer(model, 1e-3, 0.01)
    streams = {model.modalities[0]: BatchStream(x, y, batch, torch.Generator().manual_seed(0), device)}
    tic = 0.0
    for e in range(epochs + 1):
        if e == 1:
            sync(device)
            tic = time.perf_counter()
        train_one_epoch(model, streams, opt)
    sync(device)
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--paper", action="store_true", help="ResNet-18 width 64, 64 px, 1000 per class")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compilation)")
    ap.add_argument("--out", default="bench_train.json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config([*(PAPER if args.paper else ["data.modalities=[s1]"]), *args.overrides, "train.progress=false"])
    device = resolve_device(args.device)
    inst = load_institutions(cfg)[0]
    x, y = (t.to(device) for t in split_tensors(inst, "train"))
    batch = cfg.train.batch_size
    images = args.epochs * (len(y) // batch) * batch

    def fresh(compute: Compute = FP32, compile_mode: str = "off"):
        torch.manual_seed(0)
        model = build_unimodal(inst.in_channels, inst.name, len(inst.classes), cfg.model).to(device)
        return model.set_compute(compute, compile_mode)

    variants = {
        "plain fp32": lambda: plain_epochs(fresh(), x, y, batch, args.epochs, device),
        "uml_fed fp32": lambda: project_epochs(fresh(), x, y, batch, args.epochs, device),
        "uml_fed bf16": lambda: project_epochs(fresh(Compute(torch.bfloat16)), x, y, batch, args.epochs, device),
        "uml_fed channels-last": lambda: project_epochs(fresh(Compute(None, True)), x, y, batch, args.epochs, device),
        "uml_fed bf16 + channels-last": lambda: project_epochs(
            fresh(Compute(torch.bfloat16, True)), x, y, batch, args.epochs, device
        ),
    }
    if args.compile:
        variants["uml_fed bf16 + channels-last + compile"] = lambda: project_epochs(
            fresh(Compute(torch.bfloat16, True), "default"), x, y, batch, args.epochs, device
        )
    report = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "model_width": cfg.model.width,
        "patch": cfg.data.patch_size,
        "train_samples": len(y),
        "steps_per_epoch": len(y) // batch,
        "timed_epochs": args.epochs,
        "variants": {},
    }
    for name, run in variants.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = run()
        report["variants"][name] = {
            "seconds": seconds,
            "images_per_s": images / seconds,
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        }
    ref = report["variants"]["plain fp32"]["images_per_s"]
    print(
        f"{report['device']}: width {cfg.model.width}, {cfg.data.patch_size} px, {len(y)} training images, "
        f"{args.epochs} timed epochs"
    )
    for name, v in report["variants"].items():
        mem = f", {v['peak_gpu_mem_gb']:.2f} GB peak" if v["peak_gpu_mem_gb"] is not None else ""
        print(f"  {name:<40} {v['images_per_s']:>9.0f} img/s  {v['images_per_s'] / ref:5.2f}x plain fp32{mem}")
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"report: {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()
