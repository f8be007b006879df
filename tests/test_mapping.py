"""Whole-scene maps (`uml-fed map`) with a calibrated checkpoint of a real (tiny) training run, on
generated scenes: georeferencing kept, tiling and batching invisible in the result, nodata kept,
per-band input equal to stacked input, odd and tiny scene sizes, bounded memory, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from conftest import tiny_overrides
from rasterio.transform import from_origin

from uml_fed.data.sources.synthetic.mosaic import MosaicSpec, write_mosaic, write_noise_scene
from uml_fed.mapping import MapOptions, SceneError, map_scene
from uml_fed.mapping.score import score_map

PATCH = 16  # the tiny configuration's patch side


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from uml_fed.centralized import run_centralized
    from uml_fed.config import load_config

    out = tmp_path_factory.mktemp("run")
    run_centralized(load_config(tiny_overrides(), output_dir=str(out)), unimodal=False)
    return out / "checkpoints"


def _scene(path, modality="s2", size=(96, 80), **kw):
    spec = MosaicSpec(modality, *size, patch=PATCH, region_cells=2, **kw)
    return write_mosaic(spec, path, path.with_name(f"{path.stem}_labels.tif"), per_band=kw.pop("per_band", False))


def _read(path):
    with rasterio.open(path) as f:
        return f.read(), f.profile, f.tags(), f


def test_checkpoint_records_its_patch_size_and_ground_sampling(checkpoints):
    import torch

    payload = torch.load(checkpoints / "uml_s2.pt", weights_only=False)
    assert payload["patch_size"] == PATCH and payload["pixel_size_m"] == 10.0 and payload["calibrated"]


def test_map_keeps_crs_and_transform_and_writes_a_class_raster(checkpoints, tmp_path):
    scene, labels = _scene(tmp_path / "scene.tif", size=(83, 61))  # not a multiple of the stride
    summary = map_scene(checkpoints / "uml_s2.pt", [scene], tmp_path / "map.tif", MapOptions(progress=False))
    with rasterio.open(scene) as s, rasterio.open(tmp_path / "map.tif") as m:
        assert m.crs == s.crs and m.transform == s.transform and (m.height, m.width) == (s.height, s.width)
        assert m.dtypes[0] == "uint8" and m.nodata == 255 and m.profile["tiled"] and m.compression is not None
        classes = json.loads(m.tags()["CLASSES"])
        assert classes == summary.classes and m.tags()["CLASS_3"] == classes[3]
        assert m.colormap(1)[0][:3] != m.colormap(1)[1][:3]
        out = m.read(1)
    assert (out < len(classes)).all()  # every pixel of a scene without nodata is classified
    # origins 0, 8, ..., 64 and a last window shifted to end at the edge (67); 0, ..., 40 and 45
    assert summary.windows == summary.classified == (9 + 1) * (6 + 1)


def test_tiles_and_batches_do_not_change_the_map(checkpoints, tmp_path):
    scene, _ = _scene(tmp_path / "scene.tif", size=(300, 280))
    runs = {}
    for name, tile, batch in (("small", 256, 7), ("whole", 1024, 4096)):
        opt = MapOptions(tile=tile, batch_size=batch, progress=False, probabilities=tmp_path / f"p_{name}.tif")
        map_scene(checkpoints / "uml_s2.pt", [scene], tmp_path / f"{name}.tif", opt)
        runs[name] = (_read(tmp_path / f"{name}.tif")[0], _read(tmp_path / f"p_{name}.tif")[0])
    np.testing.assert_allclose(runs["small"][1], runs["whole"][1], atol=1e-5)
    agree = (runs["small"][0] == runs["whole"][0]).mean()
    assert agree > 0.9999, agree  # a pixel may flip only where two classes tie to 1e-5


def test_nodata_pixels_stay_nodata_and_empty_windows_are_not_classified(checkpoints, tmp_path):
    scene, _ = _scene(tmp_path / "scene.tif", size=(64, 64))
    with rasterio.open(scene, "r+") as f:
        x = f.read()
        x[:, :40, :40] = 0  # the L2A nodata value: a block larger than two windows
        x[3, 50, 60] = 0  # one band missing at one pixel
        f.write(x)
    summary = map_scene(
        checkpoints / "uml_s2.pt",
        [scene],
        tmp_path / "map.tif",
        MapOptions(progress=False, confidence=tmp_path / "c.tif"),
    )
    out = _read(tmp_path / "map.tif")[0][0]
    conf = _read(tmp_path / "c.tif")[0][0]
    assert (out[:40, :40] == 255).all() and out[50, 60] == 255 and np.isnan(conf[:40, :40]).all()
    rest = np.ones_like(out, dtype=bool)
    rest[:40, :40] = False
    rest[50, 60] = False
    assert (out[rest] < 255).all() and np.isfinite(conf[rest]).all()
    assert summary.classified < summary.windows  # windows inside the nodata block were skipped


def test_per_band_files_equal_the_stacked_file(checkpoints, tmp_path):
    scene, _ = _scene(tmp_path / "scene.tif", size=(72, 72))
    x, profile, _, _ = _read(scene)
    with rasterio.open(scene) as f:
        names = list(f.descriptions)
    files = []
    for c, b in enumerate(names):  # no descriptions: the band is named by a token of the file name
        p = tmp_path / f"T32TQM_20240601T103021_{b}_10m.tif"
        with rasterio.open(p, "w", **{**profile, "count": 1}) as dst:
            dst.write(x[c : c + 1])
        files.append(p)
    opt = MapOptions(progress=False, probabilities=tmp_path / "p_stack.tif")
    map_scene(checkpoints / "uml_s2.pt", [scene], tmp_path / "stack.tif", opt)
    opt = MapOptions(progress=False, probabilities=tmp_path / "p_bands.tif")
    map_scene(checkpoints / "uml_s2.pt", files[::-1], tmp_path / "bands.tif", opt)
    np.testing.assert_array_equal(_read(tmp_path / "stack.tif")[0], _read(tmp_path / "bands.tif")[0])
    np.testing.assert_array_equal(_read(tmp_path / "p_stack.tif")[0], _read(tmp_path / "p_bands.tif")[0])


def test_cog_output_and_an_explicit_band_order_give_the_same_map(checkpoints, tmp_path):
    scene, _ = _scene(tmp_path / "scene.tif", size=(64, 48))
    x, profile, _, _ = _read(scene)
    with rasterio.open(scene) as f:
        names = list(f.descriptions)
    with rasterio.open(tmp_path / "plain.tif", "w", **profile) as f:  # the same pixels, no band descriptions
        f.write(x)
    ckpt = checkpoints / "uml_s2.pt"
    map_scene(ckpt, [scene], tmp_path / "ref.tif", MapOptions(progress=False))
    map_scene(
        ckpt, [tmp_path / "plain.tif"], tmp_path / "cog.tif", MapOptions(progress=False, cog=True), band_order=names
    )
    with rasterio.open(tmp_path / "cog.tif") as c, rasterio.open(tmp_path / "ref.tif") as r:
        assert c.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and r.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
        assert c.colormap(1) == r.colormap(1) and c.tags()["CLASSES"] == r.tags()["CLASSES"] and c.nodata == 255
        np.testing.assert_array_equal(c.read(1), r.read(1))
    assert not list(tmp_path.glob(".*.part"))  # the partial files are gone


def test_bands_at_their_native_resolution_are_resampled_onto_the_10m_grid(checkpoints, tmp_path):
    stacked = _scene(tmp_path / "scene.tif", size=(96, 96))[0]
    files = write_mosaic(MosaicSpec("s2", 96, 96, patch=PATCH, region_cells=2), tmp_path / "prod.tif", per_band=True)
    with rasterio.open(files[0]) as b01:
        assert b01.res == (40.0, 40.0)  # the generator's 60 m bands are 4 x 4 blocks of 10 m
    summary = map_scene(checkpoints / "uml_s2.pt", files, tmp_path / "map.tif", MapOptions(progress=False))
    assert set(summary.resampled_bands) == {"B01", "B05", "B06", "B07", "B8A", "B09", "B11", "B12"}
    map_scene(checkpoints / "uml_s2.pt", [stacked], tmp_path / "ref.tif", MapOptions(progress=False))
    with rasterio.open(tmp_path / "map.tif") as m, rasterio.open(tmp_path / "ref.tif") as r:
        assert m.transform == r.transform
        agree = (m.read(1) == r.read(1)).mean()
    assert agree > 0.5, agree  # the same scene, its coarse bands averaged and resampled back


def test_scene_smaller_than_a_patch_is_mapped(checkpoints, tmp_path):
    scene, _ = _scene(tmp_path / "scene.tif", size=(12, 9))
    summary = map_scene(checkpoints / "uml_s2.pt", [scene], tmp_path / "map.tif", MapOptions(progress=False))
    assert summary.windows == summary.classified == 1 and (_read(tmp_path / "map.tif")[0] < 255).all()


def test_score_counts_interior_pixels_away_from_label_changes(tmp_path):
    labels = np.zeros((1, 40, 40), np.uint8)
    labels[0, :, 20:] = 1
    pred = labels.copy()
    pred[0, :, 18:22] = 1 - labels[0, :, 18:22]  # wrong only next to the border
    prof = dict(driver="GTiff", height=40, width=40, count=1, dtype="uint8", nodata=255, crs="EPSG:32632",
                transform=from_origin(600000, 5300000, 10, 10))  # fmt: skip
    for name, arr in (("labels.tif", labels), ("map.tif", pred)):
        with rasterio.open(tmp_path / name, "w", **prof) as f:
            f.write(arr)
            f.update_tags(CLASSES=json.dumps(["a", "b"]))
    s = score_map(tmp_path / "map.tif", tmp_path / "labels.tif", margin=4)
    assert s["all"]["accuracy"] == 90.0 and s["interior"]["accuracy"] == 100.0
    assert s["interior"]["pixels"] == 40 * (16 + 16)  # columns 0..15 and 24..39


@pytest.mark.parametrize(
    "case, expected",
    [
        ("other_modality", "band 'VV' of the checkpoint is not in the scene"),
        ("crs", "reproject the band files to one CRS"),
        ("resolution", "has 20 m pixels, the checkpoint was trained on 10 m pixels"),
        ("no_descriptions", "bands without descriptions; name them with --bands"),
    ],
)
def test_a_scene_that_does_not_fit_the_checkpoint_is_one_line_exit_2(checkpoints, tmp_path, case, expected):
    scene, _ = _scene(tmp_path / "scene.tif", size=(48, 48))
    ckpt, args = checkpoints / "uml_s2.pt", [str(scene)]
    x, profile, _, _ = _read(scene)
    if case == "other_modality":
        ckpt = checkpoints / "uml_s1.pt"
    elif case == "crs":
        args = []
        for c in range(x.shape[0]):
            p = tmp_path / f"band_{c}.tif"
            with rasterio.open(
                p, "w", **{**profile, "count": 1, "crs": "EPSG:32633" if c == 2 else profile["crs"]}
            ) as f:
                f.write(x[c : c + 1])
            with rasterio.open(scene) as f:
                args.append(f"--band={f.descriptions[c]}={p}")
    elif case in ("resolution", "no_descriptions"):
        res = 20.0 if case == "resolution" else 10.0
        with rasterio.open(
            tmp_path / "other.tif", "w", **{**profile, "transform": from_origin(600000, 5300000, res, res)}
        ) as f:
            f.write(x)
            if case == "resolution":
                with rasterio.open(scene) as s:
                    for i, d in enumerate(s.descriptions, start=1):
                        f.set_band_description(i, d)
        args = [str(tmp_path / "other.tif")]
    proc = subprocess.run(
        [sys.executable, "-m", "uml_fed.cli", "map", str(ckpt), *args, "--out", str(tmp_path / "m.tif"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uml-fed map: error:") and expected in lines[0], proc.stderr


def test_an_uncalibrated_checkpoint_is_refused(checkpoints, tmp_path):
    import torch

    payload = torch.load(checkpoints / "uml_s2.pt", weights_only=False)
    payload["calibrated"] = False
    payload["state_dict"] = {
        k: v for k, v in payload["state_dict"].items() if "running" not in k and "batches" not in k
    }
    torch.save(payload, tmp_path / "static.pt")
    scene, _ = _scene(tmp_path / "scene.tif", size=(32, 32))
    with pytest.raises(SceneError, match="without statistics"):
        map_scene(tmp_path / "static.pt", [scene], tmp_path / "m.tif", MapOptions(progress=False))


def test_memory_is_bounded_by_the_tile_not_the_scene(checkpoints, tmp_path):
    """A 2560 x 2560 x 12-band scene (300 MB at float32, 150 MB as stored) mapped with 256-pixel tiles:
    the process's peak memory exceeds that of a warm-up map of a 768 x 768 scene (3 x 3 tiles, the same
    working set per tile) by less than 48 MB (16 MB of them GDAL's block cache), measured in a fresh process."""
    with rasterio.open(_scene(tmp_path / "s.tif", size=(32, 32))[0]) as s:
        names = list(s.descriptions)
    write_noise_scene(tmp_path / "warm.tif", names, 768)
    write_noise_scene(tmp_path / "big.tif", names, 2560)
    ckpt = str(checkpoints / "uml_s2.pt")
    script = textwrap.dedent(f"""
        import json
        from uml_fed.mapping import MapOptions, map_scene
        from uml_fed.mapping.run import peak_rss_mb
        opt = MapOptions(tile=256, batch_size=256, stride={PATCH}, progress=False, gdal_cache_mb=16)
        map_scene({ckpt!r}, [{str(tmp_path / "warm.tif")!r}], {str(tmp_path / "warm_map.tif")!r}, opt)
        before = peak_rss_mb()
        s = map_scene({ckpt!r}, [{str(tmp_path / "big.tif")!r}], {str(tmp_path / "big_map.tif")!r}, opt)
        print(json.dumps({{"before": before, "after": peak_rss_mb(), "windows": s.windows}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = r["after"] - r["before"]
    print(f"peak RSS {r['before']:.0f} -> {r['after']:.0f} MB (+{grown:.0f} MB) for a 300 MB float32 scene")
    assert r["windows"] == (2560 // PATCH) ** 2 and grown < 48
