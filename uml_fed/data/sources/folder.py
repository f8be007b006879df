"""Generic folder source: an institution's own data as ``<root>/<modality>/<Class>/<file>``.

Files are ``.tif``/``.tiff`` (any band count and dtype, read with rasterio), ``.png``/``.jpg``
(rasterio's PNG/JPEG drivers) or ``.npy`` (``C x H x W``, or ``H x W`` for one band).  Hidden entries
(names starting with ``.``, e.g. ``.ipynb_checkpoints/``) are neither classes nor images.

Every file's header is read (rasterio's dataset header; a ``.npy`` header through a memory map), and
remembered under the cache folder by name, size and mtime.  The majority of a modality's files sets
its band count, dtype and (square) size; files that differ from it are named in one error, and so
is every file whose header cannot be read -- unless ``data.skip_unreadable`` is set: then they are
left to the decoder, which skips and reports them like any unreadable patch.  With ``data.resize``
the files may have any size: each is resampled bilinearly to that side.

Band names: ``data.bands.<modality>`` when given (one name per channel, in file order, all of
them), else ``b1 .. bC``.  The same file stem under two modalities (``s1/Forest/x.tif`` and
``s2/Forest/x.tif``) is ONE scene, so co-registered own data still ends up unpaired; files whose
stems differ are independent scenes.  Classes: ``data.classes`` (each must have its folder) or the
sorted class folders, which every modality present must share.  Own data carries no scene
metadata, so natural partitions are refused (use ``data.partition.method=iid`` or ``dirichlet``, or
list each site as its own institution).

Deployment: a node holds only its own modality's folder.  The source reads the folders present on
its machine (classes, band names, files); the other modalities' band names are unknown there (``()`` in
their specs, unless ``data.bands`` names them), and the server's handshake checks that every node
reports the same classes.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core import DataError, check_fits
from .archive import RealSource
from .base import MissingDataError, ScanResult, Scene, Sensor
from .geotiff import NAN_REMEDY, raster_header, read_raster
from .registry import register

EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
Header = tuple[int, int, int, str]  # bands, height, width, dtype


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def npy_header(path: Path, what: str) -> Header:
    """Band count, size and dtype of a ``.npy`` image from its header (a memory map: no pixels read)."""
    try:
        a = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:  # truncated: "mmap length is greater than file size"
        raise DataError(f"{what}: cannot read {str(path)!r} as .npy: {e}") from e
    if a.ndim not in (2, 3):
        raise DataError(f"{what}: {str(path)!r} has shape {a.shape}; a .npy image is C x H x W (or H x W)")
    c, h, w = a.shape if a.ndim == 3 else (1, *a.shape)
    return int(c), int(h), int(w), a.dtype.name


def describe(h: Header) -> str:
    return f"{h[0]} band(s), {h[1]}x{h[2]}, {h[3]}"


@register
class FolderSource(RealSource):
    name = "folder"
    options = ("cache_dir", "skip_unreadable")
    coregistered = False  # modalities hold different files; only equal stems are one scene
    ground_sampling_m = None  # the user's own images: the map command takes the scene's resolution as given
    layout = (
        "  <root>/<modality>/<Class>/<name>.tif|.png|.jpg|.npy   (one folder per modality in data.modalities,\n"
        "  one sub-folder per class; .npy arrays are C x H x W; same <name> in two modalities = same scene)"
    )

    def __init__(
        self, root: str | Path | None, *, cache_dir: str | None = None, skip_unreadable: bool = False, **common: Any
    ) -> None:
        self.cache_dir = cache_dir
        self.skip_unreadable = bool(skip_unreadable)
        self._sensors: dict[str, Sensor] | None = None
        super().__init__(root, **common)

    def validate(self) -> None:
        for m in self.bands:
            if m not in self.modalities:
                raise DataError(f"data.bands names {m!r}, which is not in data.modalities {self.modalities}")

    def here(self, modality: str) -> bool:
        """Whether this machine holds the modality's folder (a federated node holds only its own)."""
        return (self.root / modality).is_dir()

    def present(self) -> list[str]:
        return [m for m in self.modalities if self.here(m)]

    def _class_dirs(self, modality: str) -> list[str]:
        return sorted(p.name for p in (self.root / modality).iterdir() if p.is_dir() and visible(p))

    def _files(self, modality: str) -> list[Path]:
        out = []
        for c in self.class_names(modality):
            for f in sorted((self.root / modality / c).iterdir()):
                if f.suffix.lower() not in EXTS or not visible(f):
                    continue
                if not f.exists():  # a symbolic link that loops or points nowhere
                    if not self.skip_unreadable:
                        raise DataError(
                            f"{self.name} {modality}: {str(f)!r} is a symbolic link that loops or points nowhere; "
                            "remove it, or data.skip_unreadable=true skips it"
                        )
                    warnings.warn(f"{self.name} {modality}: skipping {str(f)!r} (a broken symbolic link)", stacklevel=2)
                    continue
                out.append(f)
        return out

    @property
    def sensors(self) -> dict[str, Sensor]:  # type: ignore[override]
        """The modalities whose folders are on this machine, each described by its files' headers."""
        if self._sensors is None:
            super().check_root()
            self._sensors = {m: self._sensor(m) for m in self.present()}
        return self._sensors

    def bands_of(self, sensor: str) -> tuple[str, ...]:
        """``data.bands.<m>`` or ``b1 .. bC``; ``()`` for another node's modality that ``data.bands`` does not name."""
        return super().bands_of(sensor) if sensor in self.bands or self.here(sensor) else ()

    def check_bands(self, sensor: str, bands: Any, key: str) -> None:
        if self.here(sensor):  # another node's modality is checked at that node
            super().check_bands(sensor, bands, key)

    def _sensor(self, modality: str) -> Sensor:
        """Band count, dtype and size from the majority of the modality's file headers."""
        what = f"{self.name} {modality}"
        files = self._files(modality)
        if not files:
            raise MissingDataError(f"{what}: no image files under {str(self.root / modality)!r} (extensions {EXTS})")
        headers = self._headers(modality, files)
        good = {p: h for p, h in headers.items() if not isinstance(h, str)}
        bad = {p: h for p, h in headers.items() if isinstance(h, str)}
        if bad and not self.skip_unreadable:
            more = f" (and {len(bad) - 1} more: {[str(p) for p in list(bad)[1:6]]})" if len(bad) > 1 else ""
            raise DataError(f"{next(iter(bad.values()))}{more}; fix or remove it, or set data.skip_unreadable=true")
        if not good:
            raise DataError(f"{what}: none of the {len(files)} files can be read, e.g. {next(iter(bad.values()))}")
        key = (lambda h: (h[0], h[3])) if self.resize else (lambda h: h)
        major = Counter(key(h) for h in good.values()).most_common(1)[0][0]
        example, ref = next((p, h) for p, h in good.items() if key(h) == major)
        odd = {p: h for p, h in good.items() if key(h) != major}
        if odd and not self.skip_unreadable:
            listed = ", ".join(f"{str(p)!r} ({describe(h)})" for p, h in list(odd.items())[:5])
            raise DataError(
                f"{what}: {len(odd)} of {len(good)} files differ from the majority ({describe(ref)}): {listed}"
                f"{' ...' if len(odd) > 5 else ''}; fix or remove them, set data.resize=<side> for mixed sizes, or "
                "data.skip_unreadable=true to skip them"
            )
        count, height, width, dtype = ref
        if not self.resize and height != width:
            raise DataError(
                f"{what}: the images are {height}x{width} pixels (e.g. {str(example)!r}), not square; set data.resize=<side>"
            )
        names = self.bands.get(modality)
        if names is not None and len(names) != count:
            raise DataError(
                f"data.bands.{modality} names {len(names)} bands but the files have {count} (e.g. {str(example)!r}); "
                "for the folder source list every channel in file order"
            )
        bands = tuple(names) if names else tuple(f"b{i + 1}" for i in range(count))
        return Sensor(bands, dtype, self.resize or int(height))

    def _headers(self, modality: str, files: list[Path]) -> dict[Path, Header | str]:
        """Every file's header (or its read error), remembered by name, size and mtime under the cache folder."""
        from .cache import digest, file_stats, read_json, write_json

        what = f"{self.name} {modality}"
        store = (Path(self.cache_dir).expanduser() if self.cache_dir else self.root / ".uml_fed_cache") / "folder"
        path = store / f"headers-{digest([str(self.root.resolve()), modality])[:10]}.json"
        rels = [str(f.relative_to(self.root)) for f in files]
        known = read_json(path) or {}
        out: dict[Path, Header | str] = {}
        fresh = {}
        for f, (rel, size, mtime) in zip(files, file_stats(self.root, rels)):
            entry = known.get(rel)
            if entry is None or entry[:2] != [size, mtime]:
                try:
                    head: Header | str = npy_header(f, what) if f.suffix.lower() == ".npy" else raster_header(f, what)
                except DataError as e:
                    head = str(e)
                entry = [size, mtime, head if isinstance(head, str) else list(head)]
            fresh[rel] = entry
            out[f] = entry[2] if isinstance(entry[2], str) else tuple(entry[2])  # type: ignore[assignment]
        if fresh != known:
            try:
                write_json(path, fresh)
            except OSError:  # a read-only root without data.cache_dir: read the headers again next time
                pass
        return out

    def check_root(self, modalities: list[str] | None = None) -> None:
        super().check_root()
        for m in self.modalities if modalities is None else modalities:
            if not self.here(m):
                raise MissingDataError(
                    f"{self.name}: modality folder {str(self.root / m)!r} is missing. Expected layout:\n{self.layout}"
                )

    def class_names(self, modality: str | None = None) -> list[str]:
        """``data.classes`` (each with its folder) or the class folders, the same in every modality here
        (or just ``modality``'s)."""
        mods = [modality] if modality else self.present()
        found = {m: self._class_dirs(m) for m in mods}
        if self.chosen_classes:
            for m, dirs in found.items():
                missing = [c for c in self.chosen_classes if c not in dirs]
                if missing:
                    raise MissingDataError(
                        f"{self.name}: class folder {str(self.root / m / missing[0])!r} is missing (data.classes lists "
                        f"{missing}, {m!r} has {dirs}); add it, or choose data.classes that every institution holds"
                    )
            return list(self.chosen_classes)
        ref = found[mods[0]]
        for m, dirs in found.items():
            if dirs != ref:
                only = sorted(set(dirs) ^ set(ref))
                raise DataError(
                    f"{self.name}: class folders of {m!r} {dirs} differ from {mods[0]!r} {ref} ({only} in one only); "
                    f"give every modality the same class folders, or choose the shared ones with data.classes=[...]"
                )
        return ref

    def scan_options(self) -> dict:
        return {"modalities": list(self.modalities)}

    def scan_inputs(self) -> list[str]:
        return [str(f.relative_to(self.root)) for m in self.present() for f in self._files(m)]

    def scan(self) -> ScanResult:
        scenes: dict[str, tuple[str, dict[str, str]]] = {}
        for m in self.present():
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
        native = self.native_size(s.size)
        what = f"{self.name} {sensor}"
        if path.suffix.lower() != ".npy":
            arr = read_raster(
                path, what=what, indexes=[i + 1 for i in idx], count=len(s.bands), dtype=s.dtype, native=native,
                out_size=self.resize or None,
            )  # fmt: skip
            return arr.astype(np.float32), [str(path)]
        try:
            a = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:
            raise DataError(
                f"{what}: cannot read {str(path)!r} as .npy ({e}); data.skip_unreadable=true skips unreadable files"
            ) from e
        a = a[None] if a.ndim == 2 else a
        check_fits(f"{what}: {str(path)!r}", a.shape, 4, "store smaller arrays (data.resize resamples after reading)")
        if a.ndim != 3 or a.shape[0] != len(s.bands) or a.dtype.name != s.dtype:
            raise DataError(f"{what}: {str(path)!r} is {a.shape} {a.dtype}, expected {len(s.bands)} x H x W {s.dtype}")
        if native is not None and a.shape[1:] != native:
            raise DataError(
                f"{what}: {str(path)!r} is {a.shape[1]}x{a.shape[2]} pixels, expected {native[0]}x{native[1]} "
                "(data.resize=<side> resamples images of any size)"
            )
        a = np.asarray(a[idx], dtype=np.float32)
        if not np.isfinite(a).all():
            raise DataError(
                f"{what}: {str(path)!r} has {int((~np.isfinite(a)).sum())} NaN/inf pixel values; {NAN_REMEDY}"
            )
        if self.resize and a.shape[1:] != (self.resize, self.resize):
            a = F.interpolate(
                torch.from_numpy(a)[None], size=(self.resize, self.resize), mode="bilinear", align_corners=False
            )[0].numpy()
        return a, [str(path)]
