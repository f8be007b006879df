"""Generic folder source: an institution's own data as ``<root>/<modality>/<Class>/<file>``.

Files are ``.tif``/``.tiff`` (any band count and dtype, read with rasterio), ``.png``/``.jpg``
(rasterio's PNG/JPEG drivers) or ``.npy`` (``C x H x W``, or ``H x W`` for one band).  All files of
a modality must have the same band count; they must also share one square size unless
``data.resize`` is set, in which case every image is resampled bilinearly to that side.

Band names: ``data.bands.<modality>`` when given (one name per channel, in file order, all of
them), else ``b1 .. bC``.  The same file stem under two modalities (``s1/Forest/x.tif`` and
``s2/Forest/x.tif``) is ONE scene, so co-registered own data still ends up unpaired; files whose
stems differ are independent scenes.  Classes: ``data.classes`` or the sorted class folders, which
every modality must have.  Own data carries no scene metadata, so natural partitions are refused
(use ``data.partition.method=iid`` or ``dirichlet``, or list each site as its own institution).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataError
from .geotiff import raster_count, read_raster
from .registry import register
from .source import MissingDataError, RealSource, ScanResult, Scene, Sensor

EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")


@register
class FolderSource(RealSource):
    name = "folder"
    options = ("cache_dir",)
    coregistered = False  # modalities hold different files; only equal stems are one scene
    layout = (
        "  <root>/<modality>/<Class>/<name>.tif|.png|.jpg|.npy   (one folder per modality in data.modalities,\n"
        "  one sub-folder per class; .npy arrays are C x H x W; same <name> in two modalities = same scene)"
    )

    def __init__(self, root: str | Path | None, *, cache_dir: str | None = None, **common: Any) -> None:
        self.cache_dir = cache_dir
        self._sensors: dict[str, Sensor] | None = None
        super().__init__(root, **common)

    def validate(self) -> None:
        for m in self.bands:
            if m not in self.modalities:
                raise DataError(f"data.bands names {m!r}, which is not in data.modalities {self.modalities}")

    def _files(self, modality: str) -> list[Path]:
        base = self.root / modality
        out = []
        for cdir in sorted(p for p in base.iterdir() if p.is_dir()):
            out += [f for f in sorted(cdir.iterdir()) if f.suffix.lower() in EXTS]
        return out

    @property
    def sensors(self) -> dict[str, Sensor]:  # type: ignore[override]
        if self._sensors is None:
            self.check_root()
            out = {}
            for m in self.modalities:
                files = self._files(m)
                if not files:
                    raise MissingDataError(
                        f"{self.name}: no image files under {str(self.root / m)!r} (extensions {EXTS})"
                    )
                first = files[0]
                count, size = self._peek(first, m)
                names = self.bands.get(m)
                if names is not None and len(names) != count:
                    raise DataError(
                        f"data.bands.{m} names {len(names)} bands but {str(first)!r} has {count}; "
                        "for the folder source list every channel in file order"
                    )
                out[m] = Sensor(tuple(names) if names else tuple(f"b{i + 1}" for i in range(count)), None, int(size))
            self._sensors = out
        return self._sensors

    def _peek(self, first: Path, modality: str) -> tuple[int, int]:
        """Band count and side of a modality's first file, remembered in the cache (no re-open later)."""
        from .cache import file_stats, read_json, write_json

        store = (Path(self.cache_dir).expanduser() if self.cache_dir else self.root / ".uml_fed_cache") / "folder"
        path = store / "peek.json"
        key = json.dumps(file_stats(self.root, [str(first.relative_to(self.root))]))
        known = read_json(path) or {}
        if key in known:
            return tuple(known[key])  # type: ignore[return-value]
        if first.suffix.lower() == ".npy":
            a = np.load(first, mmap_mode="r")
            count, size = (1 if a.ndim == 2 else int(a.shape[0])), int(a.shape[-1])
        else:
            count = raster_count(first, f"{self.name} {modality}")
            size = int(read_raster(first, what=f"{self.name} {modality}", indexes=[1]).shape[-1])
        known[key] = [count, size]
        try:
            write_json(path, known)
        except OSError:  # a read-only root without data.cache_dir: just peek again next time
            pass
        return count, size

    def check_root(self, modalities: list[str] | None = None) -> None:
        super().check_root()
        for m in self.modalities:
            if not (self.root / m).is_dir():
                raise MissingDataError(
                    f"{self.name}: modality folder {str(self.root / m)!r} is missing. Expected layout:\n{self.layout}"
                )

    def class_names(self) -> list[str]:
        if self.chosen_classes:
            return list(self.chosen_classes)
        per_mod = {m: sorted(p.name for p in (self.root / m).iterdir() if p.is_dir()) for m in self.modalities}
        ref = per_mod[self.modalities[0]]
        for m, cls in per_mod.items():
            if cls != ref:
                raise DataError(f"{self.name}: class folders of {m!r} {cls} differ from {self.modalities[0]!r} {ref}")
        return ref

    def scan_options(self) -> dict:
        return {"modalities": list(self.modalities)}

    def scan_inputs(self) -> list[str]:
        return [str(f.relative_to(self.root)) for m in self.modalities for f in self._files(m)]

    def scan(self) -> ScanResult:
        scenes: dict[str, tuple[str, dict[str, str]]] = {}
        for m in self.modalities:
            for f in self._files(m):
                sid = f"{f.parent.name}/{f.stem}"
                scenes.setdefault(sid, (f.parent.name, {}))[1][m] = str(f.relative_to(self.root))
        return ScanResult([Scene(sid, c, files) for sid, (c, files) in sorted(scenes.items())])

    def read(self, scene: Scene, sensor: str, bands: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
        s = self.sensors[sensor]
        rel = scene.files.get(sensor)
        if rel is None:
            raise MissingDataError(f"{self.name}: scene {scene.id} has no {sensor} file")
        path = self.root / rel
        idx = [s.bands.index(b) for b in bands]
        resize = self.resize
        native = None if resize else (s.size, s.size)
        what = f"{self.name} {sensor}"
        if path.suffix.lower() == ".npy":
            try:
                a = np.load(path)
            except (OSError, ValueError) as e:
                raise DataError(f"{what}: cannot read {str(path)!r} as .npy: {e}") from e
            a = a[None] if a.ndim == 2 else a
            if a.ndim != 3 or a.shape[0] != len(s.bands):
                raise DataError(f"{what}: {str(path)!r} has shape {a.shape}, expected {len(s.bands)} x H x W")
            if native is not None and a.shape[1:] != native:
                raise DataError(
                    f"{what}: {str(path)!r} is {a.shape[1]}x{a.shape[2]}, expected {native}; set data.resize"
                )
            a = a[idx].astype(np.float32)
            if not np.isfinite(a).all():
                raise DataError(f"{what}: {str(path)!r} has {int((~np.isfinite(a)).sum())} NaN/inf pixel values")
            if resize and a.shape[1:] != (resize, resize):
                a = F.interpolate(
                    torch.from_numpy(a)[None], size=(resize, resize), mode="bilinear", align_corners=False
                )[0].numpy()
        else:
            a = read_raster(
                path,
                what=what,
                indexes=[i + 1 for i in idx],
                count=len(s.bands),
                native=native,
                out_size=resize or None,
            ).astype(np.float32)
        return a, [str(path)]
