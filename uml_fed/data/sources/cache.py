"""Decode-once cache: one folder per institution (and option set) with ``.npy`` arrays and a manifest,
and the scan of each archive (:func:`load_scan`).

Layout of ``<cache_dir>/<source>/<institution>-<options hash>/``::

    manifest.json          options, source files [(path, size, mtime_ns)], skipped patches, ids, shapes
    train.npy  train_labels.npy   val.npy  val_labels.npy   test.npy  test_labels.npy

Arrays keep the sensor's compact dtype (uint16 reflectance, uint8 RGB, float32 dB) and are opened
with ``mmap_mode="r"``.  The cache is fresh when the stored options equal the requested ones and
every recorded source file still has the same size and mtime; otherwise it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import SPLITS, DataError
from .base import ScanResult, Scene

if TYPE_CHECKING:
    from typing import Protocol

    class Scanned(Protocol):
        """What the scan cache needs of a reader (:class:`.archive.RealSource`)."""

        name: str
        root: Path

        def scan(self) -> ScanResult: ...

        def scan_inputs(self) -> list[str]: ...

        def scan_options(self) -> dict[str, Any]: ...


SCAN_FORMAT = 4  # 4: scans carry counts (e.g. nodata label pixels); bump when a scan's content changes


def digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_stats(root: Path, relpaths: list[str]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` per file (``[path, -1, -1]`` for an absent one)."""
    out = []
    for rel in relpaths:
        try:
            st = os.stat(Path(root) / rel)
            out.append([rel, st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            out.append([rel, -1, -1])
        except OSError as e:  # e.g. a symbolic link to itself: ELOOP
            raise DataError(
                f"{str(Path(root) / rel)!r}: cannot read its file status ({e.strerror}); remove or fix it"
            ) from None
    return out


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


class InstitutionCache:
    """The cached splits of one institution under one option set."""

    def __init__(self, path: Path) -> None:
        self.dir = Path(path)

    def manifest(self) -> dict:
        return read_json(self.dir / "manifest.json") or {}

    def is_fresh(self, options: dict, root: Path) -> bool:
        m = self.manifest()
        if not m or m.get("options") != json.loads(json.dumps(options)):
            return False
        if any(not (self.dir / f"{s}.npy").is_file() for s in SPLITS):
            return False
        return file_stats(root, [f[0] for f in m.get("files", [])]) == m.get("files")

    def write(
        self,
        splits: dict[str, tuple[np.ndarray, np.ndarray, list[str]]],
        options: dict,
        files: list[str],
        skipped: list[dict],
        root: Path,
    ) -> None:
        """Write atomically: a temporary sibling folder renamed over the old one."""
        tmp = self.dir.with_name(self.dir.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for s, (images, labels, _) in splits.items():
            np.save(tmp / f"{s}.npy", np.ascontiguousarray(images))
            np.save(tmp / f"{s}_labels.npy", np.asarray(labels, dtype=np.int64))
        manifest = {
            "options": options,
            "files": file_stats(root, files),
            "skipped": skipped,
            "ids": {s: list(ids) for s, (_, _, ids) in splits.items()},
            "shapes": {s: list(images.shape) for s, (images, _, _) in splits.items()},
        }
        write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.replace(tmp, self.dir)

    def load(self, mmap: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
        ids = self.manifest()["ids"]
        mode = "r" if mmap else None
        return {
            s: (
                np.load(self.dir / f"{s}.npy", mmap_mode=mode),
                np.load(self.dir / f"{s}_labels.npy"),
                ids[s],
            )
            for s in SPLITS
        }

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file()) if self.dir.is_dir() else 0


def load_scan(source: Scanned, cache_dir: Path, report: dict | None = None) -> ScanResult:
    """The source's scan, from ``<cache>/<source>/scan-*.json`` when its inputs are unchanged."""
    key = {
        "format": SCAN_FORMAT,
        "source": source.name,
        "root": str(source.root.resolve()),
        "options": source.scan_options(),
        "inputs": file_stats(source.root, source.scan_inputs()),
    }
    path = cache_dir / source.name / f"scan-{digest([key['root'], key['options']])[:10]}.json"
    cached = read_json(path)
    if cached is not None and cached.get("digest") == digest(key):
        if report is not None:
            report["scan"] = "reused"
        scenes = [Scene(s[0], s[1], dict(s[2]), dict(s[3])) for s in cached["scenes"]]
        return ScanResult(scenes, dict(cached["excluded"]), dict(cached["counts"]))
    result = source.scan()
    scenes = [[s.id, s.label, s.files, s.meta] for s in result.scenes]
    entry = {"digest": digest(key), "source": source.name, "excluded": result.excluded, "counts": result.counts}
    write_json(path, {**entry, "scenes": scenes})
    if report is not None:
        report["scan"] = "built"
    return result
