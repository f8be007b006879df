"""Real-archive readers on tiny written fixtures: layouts, band order, sizes, labels, subsets, cache."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import build

from uml_fed.config import DataConfig, load_config
from uml_fed.data.core import DataError
from uml_fed.data.loading import load_source
from uml_fed.data.prepare import format_report, prepare_data
from uml_fed.data.sources import fixtures
from uml_fed.data.sources.allocate import allocate
from uml_fed.data.sources.archive import scene_ids
from uml_fed.data.sources.bigearthnet import S2_BANDS, S2_NATIVE
from uml_fed.data.sources.eurosat import MS_BANDS
from uml_fed.data.specs import data_specs

SMALL = dict(train_per_class=2, val_per_class=1, test_per_class=1)
BEN3 = ["Arable land", "Coniferous forest", "Marine waters"]
SEN3 = ["Savannas", "Croplands", "Water bodies"]


def real_institution_names(c: DataConfig) -> list[str]:
    return [s.name for s in data_specs(c)]


def cfg(source: str, root, cache, **kw) -> DataConfig:
    base = dict(source=source, root=str(root), cache_dir=str(cache), **SMALL)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture(scope="module")
def ben1(tmp_path_factory):
    root = tmp_path_factory.mktemp("ben1")
    return fixtures.write_bigearthnet_v1(root, per_class=12, classes=BEN3, seed=1)


@pytest.fixture(scope="module")
def ben2(tmp_path_factory):
    root = tmp_path_factory.mktemp("ben2")
    return fixtures.write_bigearthnet_v2(root, per_class=9, classes=BEN3, seed=2)


@pytest.fixture(scope="module")
def sen(tmp_path_factory):
    root = tmp_path_factory.mktemp("sen")
    info = fixtures.write_sen12ms(root, per_class=9, classes=SEN3, seed=3)
    fixtures.write_sen12ms(root, per_class=2, classes=SEN3, seed=4, season="winter", with_pkl=False)
    return info


@pytest.fixture(scope="module")
def euro(tmp_path_factory):
    root = tmp_path_factory.mktemp("euro")
    return fixtures.write_eurosat(root, per_class=12, seed=5)


# ------------------------------------------------------------------------------------------ fixtures' layout


def test_bigearthnet_fixture_native_layout(ben1):
    root = Path(ben1["root"])
    patch = next(iter(ben1["labels"]))
    for band in S2_BANDS:
        with rasterio.open(root / "BigEarthNet-v1.0" / patch / f"{patch}_{band}.tif") as f:
            assert (f.height, f.width, f.count, f.dtypes[0]) == (S2_NATIVE[band], S2_NATIVE[band], 1, "uint16")
            assert f.crs.to_epsg() == 32633 and f.transform.a == 1200 / S2_NATIVE[band]
    s1 = next((root / "BigEarthNet-S1-v1.0").iterdir())
    with rasterio.open(s1 / f"{s1.name}_VV.tif") as f:
        assert (f.height, f.dtypes[0]) == (120, "float32")


# ------------------------------------------------------------------------------------------ readers


@pytest.mark.parametrize("which", ["ben1", "ben2"])
def test_bigearthnet_reader_sizes_dtypes_labels(which, request, tmp_path):
    info = request.getfixturevalue(which)
    source = "bigearthnet_v1" if which == "ben1" else "bigearthnet_v2"
    insts, report = build(cfg(source, info["root"], tmp_path, classes=BEN3), seed=0)
    s1, s2 = insts
    assert s2.bands == list(S2_BANDS) and s1.bands == ["VV", "VH"]
    assert s2.split("train").images.shape == (6, 12, 120, 120)  # 20 and 60 px bands resampled to 120
    cached = np.load(Path(report["institutions"]["s2"]["cache_dir"]) / "train.npy", mmap_mode="r")
    assert cached.dtype == np.uint16
    for inst in insts:
        for s in inst.splits.values():
            assert [inst.classes[k] for k in s.labels] == [info["labels"][i] for i in s.ids]
    # snow, cloud and multi-label scenes never selected, and counted
    assert report["excluded"]["seasonal_snow"] == 1 and report["excluded"]["cloud_or_shadow"] == 1
    assert report["excluded"]["multi_label"] == 2
    assert set().union(*scene_ids(insts).values()) <= set(info["labels"])


def test_bigearthnet_resampling_is_bilinear_from_native(ben1, tmp_path):
    insts, _ = build(cfg("bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3, modalities=["s2"]), seed=0)
    s2 = insts[0]
    sid = s2.split("train").ids[0]
    with rasterio.open(Path(ben1["root"]) / "BigEarthNet-v1.0" / sid / f"{sid}_B01.tif") as f:
        native = f.read(1).astype(np.float64)
    up = s2.split("train").images[0, S2_BANDS.index("B01")]
    assert up.shape == (120, 120)
    assert abs(up.mean() - native.mean()) < 0.02 * native.mean()  # an interpolation, not a new signal
    assert len(np.unique(up)) > len(np.unique(native))  # smooth, not nearest-neighbour blocks


def test_sen12ms_season_labels_and_pkl_vs_lc(sen, tmp_path):
    c = cfg("sen12ms", sen["root"], tmp_path / "a", classes=SEN3)
    s1, s2 = load_source(c, seed=0)
    assert s2.split("train").images.shape == (6, 13, 256, 256) and s1.split("val").images.shape[1] == 2
    ids = scene_ids([s1, s2])
    assert all(i.startswith("ROIs1868_summer_") for v in ids.values() for i in v)  # season filter
    for inst in (s1, s2):
        for s in inst.splits.values():
            assert [inst.classes[k] for k in s.labels] == [sen["labels"][i] for i in s.ids]
    # without the pkl the label comes from band 1 of the lc raster: same scenes, same labels
    pkl = Path(sen["root"]) / "IGBP_probability_labels.pkl"
    saved = pkl.read_bytes()
    pkl.unlink()
    try:
        insts2, _ = build(cfg("sen12ms", sen["root"], tmp_path / "b", classes=SEN3), seed=0)
    finally:
        pkl.write_bytes(saved)
    assert scene_ids(insts2) == ids


def test_sen12ms_lc_nodata_pixels_ignored_and_counted(tmp_path):
    """Without the pkl, labels come from the lc raster's valid pixels; its nodata pixels are counted."""
    info = fixtures.write_sen12ms(tmp_path / "s", per_class=6, classes=SEN3, with_pkl=False, size=64, lc_nodata=255)
    root = Path(info["root"])
    empty = sorted((root / "ROIs1868_summer").glob("lc_*/*.tif"))[0]  # a patch with no valid label pixel
    fixtures.write_geotiff(empty, np.full((4, 64, 64), 255, np.uint16), "EPSG:32633", fixtures.from_origin(0, 0, 10, 10),
                           nodata=255)  # fmt: skip
    conf = load_config(["data=sen12ms", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}", "data.resize=64",
                        "data.modalities=[s2]", "data.classes=[Savannas,Croplands,Water bodies]",
                        "data.train_per_class=2", "data.val_per_class=1", "data.test_per_class=1"])  # fmt: skip
    report = prepare_data(conf, echo=False)
    assert report["excluded"] == {"lc_all_nodata": 1}
    nodata = info["lc_nodata_pixels"] - 64 // 8 * 64 + 64 * 64
    assert report["scan_counts"] == {"lc_nodata_pixels": nodata, "lc_patches_with_nodata": 18}
    assert f"scan: lc_nodata_pixels={nodata}, lc_patches_with_nodata=18" in format_report(report)
    (s2,) = load_source(conf.data)
    for s in s2.splits.values():
        assert [s2.classes[k] for k in s.labels] == [info["labels"][i] for i in s.ids]


def test_sen12ms_igbp_schemes(tmp_path):
    from uml_fed.data.sources.sen12ms import SEN12MS

    frac = np.zeros(17)
    frac[[0, 1, 9]] = 0.3, 0.3, 0.4  # needleleaf + broadleaf forest 0.6 in total, grasslands 0.4
    assert SEN12MS(tmp_path)._single(frac) == "Grasslands"
    simple = SEN12MS(tmp_path, igbp_scheme="simplified", classes=["Forest", "Grassland"])
    assert simple._single(frac) == "Forest"
    with pytest.raises(DataError, match="igbp_scheme=simplified needs data.classes"):
        SEN12MS(tmp_path, igbp_scheme="simplified")


def test_eurosat_ms_band_order_b8a_last_in_file(euro, tmp_path):
    insts, _ = build(cfg("eurosat", euro["root"], tmp_path, modalities=["ms"]), seed=0)
    ms = insts[0]
    assert ms.bands == list(MS_BANDS) and MS_BANDS[8] == "B8A"
    sid = ms.split("train").ids[0]
    cls = sid.rsplit("_", 1)[0]
    path = Path(euro["root"]) / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif" / cls / f"{sid}.tif"
    with rasterio.open(path) as f:
        raw = f.read()
    got = ms.split("train").images[0]
    np.testing.assert_array_equal(got[8], raw[12])  # B8A is the LAST band of the file
    np.testing.assert_array_equal(got[9:], raw[8:12])  # B09, B10, B11, B12
    np.testing.assert_array_equal(got[:8], raw[:8])


def test_eurosat_rgb_jpg_and_sar_matched_by_name(euro, tmp_path):
    c = cfg("eurosat", euro["root"], tmp_path, modalities=["s1", "rgb"], paired=True)
    insts, report = build(c, seed=0)
    s1, rgb = insts
    assert rgb.bands == ["B04", "B03", "B02"] and rgb.split("test").images.shape[1:] == (3, 64, 64)
    assert np.load(Path(report["institutions"]["rgb"]["cache_dir"]) / "test.npy").dtype == np.uint8
    assert s1.split("train").ids == rgb.split("train").ids  # paired: same <Class>_<n> names
    assert all(i.rsplit("_", 1)[0] == rgb.classes[k] for i, k in zip(rgb.split("train").ids, rgb.split("train").labels))


@pytest.mark.parametrize("source", ["eurosat", "sen12ms"])
def test_resize_reads_patches_of_any_size_in_every_reader(source, tmp_path):
    """Patches that are not the archive's native size are refused, unless data.resize resamples them."""
    if source == "eurosat":
        fixtures.write_eurosat(tmp_path / "d", per_class=12, classes=["Forest", "River"], size=40)
        kw, native = dict(modalities=["s1", "rgb", "ms"], classes=["Forest", "River"]), 64
    else:
        fixtures.write_sen12ms(tmp_path / "d", per_class=8, classes=SEN3[:2], size=96)
        kw, native = dict(classes=SEN3[:2]), 256
    with pytest.raises(DataError, match=rf"is \d+x\d+ pixels, expected {native}x{native} \(data.resize=<side>"):
        load_source(cfg(source, tmp_path / "d", tmp_path / "c", **kw))
    insts = load_source(cfg(source, tmp_path / "d", tmp_path / "c", resize=32, **kw))
    assert {i.split("train").images.shape[2:] for i in insts} == {(32, 32)}


@pytest.mark.parametrize("flat", [False, True])
def test_eurosat_sar_copernicus_bench_layout(flat, tmp_path):
    """EuroSAT-SAR as Copernicus-Bench ships it (``eurosat_s1/all_imgs/``) reads as the usual layout."""
    info = fixtures.write_eurosat(tmp_path / "e", per_class=5, modalities=("s1",),
                                  sar_dir="eurosat_s1/all_imgs", sar_flat=flat)  # fmt: skip
    assert (Path(info["root"]) / "eurosat_s1/all_imgs" / ("" if flat else "Forest") / "Forest_1.tif").is_file()
    usual_root = fixtures.write_eurosat(tmp_path / "u", per_class=5, modalities=("s1",))["root"]
    (s1,) = load_source(cfg("eurosat", info["root"], tmp_path / "c", modalities=["s1"]), seed=0)
    (usual,) = load_source(cfg("eurosat", usual_root, tmp_path / "c", modalities=["s1"]), seed=0)
    assert s1.split("train").ids == usual.split("train").ids
    np.testing.assert_array_equal(s1.split("train").images, usual.split("train").images)


def test_folder_source_png_tif_npy_and_resize(tmp_path):
    mods = {
        "sar": {"ext": "tif", "bands": 2, "size": 16},
        "photo": {"ext": "png", "bands": 3, "size": 24},
        "arr": {"ext": "npy", "bands": 1, "size": 20},
    }
    info = fixtures.write_folder(tmp_path / "f", modalities=mods, classes=("a", "b"), per_class=4)
    c = cfg("folder", info["root"], tmp_path / "c", modalities=list(mods), resize=12, train_per_class=2)
    insts = load_source(c, seed=0)
    assert [i.name for i in insts] == ["sar", "photo", "arr"]
    assert [i.split("train").images.shape for i in insts] == [(4, 2, 12, 12), (4, 3, 12, 12), (4, 1, 12, 12)]
    assert insts[0].classes == ["a", "b"] and insts[1].bands == ["b1", "b2", "b3"]
    named = cfg(
        "folder", info["root"], tmp_path / "d", modalities=["photo"], bands={"photo": ["R", "G", "B"]}, per_band=True
    )
    assert real_institution_names(named) == ["photo_R", "photo_G", "photo_B"]


def _folder_conf(root, cache, *extra: str):
    return load_config(["data=folder", f"data.root={root}", f"data.cache_dir={cache}", "data.modalities=[s1,rgb]",
                        "data.train_per_class=2", "data.val_per_class=1", "data.test_per_class=1", *extra])  # fmt: skip


def test_folder_node_with_only_its_own_modality(tmp_path):
    """A deployed node holds only its own modality's folder: it loads its institution, with the scenes and
    classes the full load gives it, and knows the other modalities' names but not their bands."""
    import shutil

    from uml_fed.data import institution_specs, load_institutions

    info = fixtures.write_folder(tmp_path / "all", per_class=5)
    full = load_institutions(_folder_conf(info["root"], tmp_path / "c1"))
    shutil.copytree(Path(info["root"]) / "s1", tmp_path / "node/s1")
    node = _folder_conf(tmp_path / "node", tmp_path / "c2")
    assert [(s.name, s.bands) for s in institution_specs(node)] == [("s1", ("b1", "b2")), ("rgb", ())]
    (s1,) = load_institutions(node, only="s1")
    assert s1.classes == full[0].classes == ["a", "b", "c"]
    for split in ("train", "val", "test"):
        assert s1.split(split).ids == full[0].split(split).ids
        np.testing.assert_array_equal(s1.split(split).images, full[0].split(split).images)
    with pytest.raises(DataError, match=r"modality folder '.*node/rgb' is missing"):
        load_institutions(node, only="rgb")
    with pytest.raises(DataError, match=r"data.per_band .* bands of 'rgb', which are unknown here .* data.bands.rgb"):
        institution_specs(_folder_conf(tmp_path / "node", tmp_path / "c2", "data.per_band=true"))


def test_folder_node_classes_from_its_own_folders(tmp_path):
    """A node's class list is its own class folders, or data.classes, each of which must have its folder."""
    from uml_fed.data import load_institutions

    fixtures.write_folder(tmp_path / "node", modalities={"s1": {"ext": "tif", "bands": 2, "size": 8}}, per_class=4,
                          classes=("a", "b", "c", "d"))  # fmt: skip
    (s1,) = load_institutions(_folder_conf(tmp_path / "node", tmp_path / "c"), only="s1")
    assert s1.classes == ["a", "b", "c", "d"]
    (s1,) = load_institutions(_folder_conf(tmp_path / "node", tmp_path / "c", "data.classes=[d,a]"), only="s1")
    assert s1.classes == ["d", "a"] and set(s1.split("train").labels) == {0, 1}
    with pytest.raises(DataError, match=r"class folder '.*node/s1/e' is missing \(data.classes lists \['e'\]"):
        load_institutions(_folder_conf(tmp_path / "node", tmp_path / "c", "data.classes=[a,e]"), only="s1")


def test_folder_hidden_entries_are_neither_classes_nor_images(tmp_path):
    info = fixtures.write_folder(tmp_path / "f", modalities={"s1": {"ext": "tif", "bands": 2, "size": 8}}, per_class=4)
    root = Path(info["root"])
    (root / "s1/.ipynb_checkpoints").mkdir()
    (root / "s1/.ipynb_checkpoints/s1_00000-checkpoint.tif").write_bytes(b"not a tiff")
    (root / "s1/a/._s1_00000.tif").write_bytes(b"AppleDouble")  # macOS resource fork
    (s1,) = load_source(cfg("folder", root, tmp_path / "c", modalities=["s1"]), seed=0)
    assert s1.classes == ["a", "b", "c"] and not any(i.split("/")[1].startswith(".") for i in s1.split("train").ids)


# ------------------------------------------------------------------------------------------ subsets


def test_subset_sizes_balance_and_seed(euro, tmp_path):
    c = cfg(
        "eurosat",
        euro["root"],
        tmp_path,
        modalities=["s1", "rgb"],
        train_per_class=3,
        val_per_class=1,
        test_per_class=2,
    )
    insts = load_source(c, seed=0)
    for inst in insts:
        for split, n in (("train", 3), ("val", 1), ("test", 2)):
            counts = np.bincount(inst.split(split).labels, minlength=10)
            assert (counts == n).all(), (inst.name, split, counts)
    again = load_source(c, seed=0)
    other = load_source(cfg("eurosat", euro["root"], tmp_path, modalities=["s1", "rgb"], **SMALL), seed=1)
    assert scene_ids(again) == scene_ids(insts)
    assert scene_ids(other) != scene_ids(insts)


def test_unpaired_scenes_are_disjoint_and_paired_overlap(ben1, tmp_path):
    """Fails on a paired split: the same builder with data.paired=true shares every scene."""
    unpaired = load_source(cfg("bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3), seed=0)
    ids = scene_ids(unpaired)
    assert ids["s1"] and ids["s2"] and not (ids["s1"] & ids["s2"])
    paired = load_source(cfg("bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3, paired=True), seed=0)
    pids = scene_ids(paired)
    assert pids["s1"] == pids["s2"]
    # within an institution the three splits never share a scene either
    for inst in unpaired:
        tr, va, te = (set(inst.split(s).ids) for s in ("train", "val", "test"))
        assert not (tr & va or tr & te or va & te)


def test_per_band_institutions_and_only(ben1, tmp_path):
    c = cfg(
        "bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3, per_band=True,
        bands={"s1": ["VV"], "s2": ["B02", "B05", "B09"]}, train_per_class=1,
    )  # fmt: skip
    assert real_institution_names(c) == ["s1_VV", "s2_B02", "s2_B05", "s2_B09"]
    allk = load_source(c, seed=0)
    ids = scene_ids(allk)
    names = list(ids)
    assert all(not (ids[a] & ids[b]) for a in names for b in names if a < b)  # K=4, all disjoint
    (one,) = load_source(c, seed=0, only="s2_B05")
    assert one.bands == ["B05"] and one.split("train").images.shape == (3, 1, 120, 120)
    assert scene_ids([one])["s2_B05"] == ids["s2_B05"]  # a node alone gets the same scenes
    with pytest.raises(DataError, match="unknown modality 'nope'"):
        load_source(c, seed=0, only="nope")


def test_node_with_only_its_own_modality_gets_the_same_scenes(ben1, tmp_path):
    import shutil

    node = tmp_path / "node_s1"
    shutil.copytree(Path(ben1["root"]) / "BigEarthNet-S1-v1.0", node / "BigEarthNet-S1-v1.0")
    for name in ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv"):
        shutil.copy(Path(ben1["root"]) / name, node / name)
    full = load_source(cfg("bigearthnet_v1", ben1["root"], tmp_path / "a", classes=BEN3), seed=3)
    (alone,) = load_source(cfg("bigearthnet_v1", node, tmp_path / "b", classes=BEN3), seed=3, only="s1")
    assert scene_ids([alone]) == {"s1": scene_ids(full)["s1"]}
    with pytest.raises(DataError, match="BigEarthNet-v1.0' for modality 's2' is missing"):
        load_source(cfg("bigearthnet_v1", node, tmp_path / "b", classes=BEN3), seed=3, only="s2")


def test_short_class_raise_shrink_drop(ben1, tmp_path):
    big = dict(classes=BEN3, train_per_class=2, val_per_class=3, test_per_class=3)
    with pytest.raises(
        DataError,
        match=r"class 'Arable land' has 12 single-label scenes.*need train/val/test s1 2/3/3, s2 2/3/3.*get only 6",
    ):
        load_source(cfg("bigearthnet_v1", ben1["root"], tmp_path, **big), seed=0)
    with pytest.warns(UserWarning, match="shrunk this class"):
        insts = load_source(cfg("bigearthnet_v1", ben1["root"], tmp_path, short_class="shrink", **big), seed=0)
    assert len(insts[0].split("val")) == 3 * 2  # 6 available of 8 -> train/val/test 2/2/2 per class
    with pytest.warns(UserWarning, match="dropped class"):
        with pytest.raises(DataError, match="no class left"):
            load_source(cfg("bigearthnet_v1", ben1["root"], tmp_path, short_class="drop", **big), seed=0)


def test_allocate_drop_keeps_other_classes():
    from uml_fed.data.sources.base import Scene

    scenes = [Scene(f"a{i}", "A", {"x": "", "y": ""}) for i in range(10)] + [Scene("b0", "B", {"x": "", "y": ""})]
    with pytest.warns(UserWarning, match="class 'B' has 1"):
        plan = allocate(
            scenes, ["A", "B"], [("x", "x"), ("y", "y")], {"x": (2, 1, 1), "y": (2, 1, 1)}, short_class="drop"
        )
    assert plan.classes == ["A"] and not set(plan.pools["x"]["A"]) & set(plan.pools["y"]["A"])


# Table 6 of the paper, every number PER CLASS: (train, val, test), low-data train = 100
TABLE6 = {"bigearthnet": (1800, 400, 700), "sen12ms": (300, 400, 400), "eurosat_s1_rgb": (1000, 400, 400)}


@pytest.mark.parametrize("dataset", sorted(TABLE6))
@pytest.mark.parametrize("shape", ["bimodal", "finegrained"])
def test_presets_follow_table6_per_class(dataset, shape):
    full = load_config([f"experiment={dataset}_{shape}_full", "data.root=/nowhere"]).data
    low = load_config([f"experiment={dataset}_{shape}_lowdata", "data.root=/nowhere"]).data
    assert (full.train_per_class, full.val_per_class, full.test_per_class) == TABLE6[dataset]
    assert (low.train_per_class, low.val_per_class, low.test_per_class) == (100, *TABLE6[dataset][1:])
    assert low.train_per_class < full.train_per_class  # low-data is always below full


# ------------------------------------------------------------------------------------------ normalisation


def test_normalization_train_and_published(euro, tmp_path):
    tr = load_source(cfg("eurosat", euro["root"], tmp_path, modalities=["s1"]), seed=0)[0]
    x = tr.split("train").images.astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-3)
    pub = load_source(cfg("eurosat", euro["root"], tmp_path, modalities=["s1"], normalization="published"), seed=0)[0]
    np.testing.assert_allclose(pub.mean, [-12.59, -20.26]) and np.testing.assert_allclose(pub.std, [5.26, 5.91])
    with pytest.raises(DataError, match=r"no published statistics for band\(s\) \['B04', 'B03', 'B02'\]"):
        load_source(cfg("eurosat", euro["root"], tmp_path, modalities=["rgb"], normalization="published"), seed=0)


# ------------------------------------------------------------------------------------------ cache


def test_cache_reused_without_opening_any_tiff(ben1, tmp_path, monkeypatch):
    c = cfg("bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3)
    first = load_source(c, seed=0)

    def boom(*a, **k):
        raise AssertionError("rasterio.open called on a cached load")

    monkeypatch.setattr(rasterio, "open", boom)
    second, report = build(c, seed=0)
    assert report["scan"] == "reused" and {r["cache"] for r in report["institutions"].values()} == {"reused"}
    assert scene_ids(second) == scene_ids(first)


def test_folder_cache_reused_without_opening_any_image(tmp_path, monkeypatch):
    info = fixtures.write_folder(tmp_path / "f", per_class=4)
    c = cfg("folder", info["root"], tmp_path / "c", modalities=["s1", "rgb"])
    first = load_source(c, seed=0)
    monkeypatch.setattr(rasterio, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rasterio.open")))
    assert scene_ids(load_source(c, seed=0)) == scene_ids(first)


def test_cache_rebuilt_on_option_change_and_touched_file(ben1, tmp_path):
    c = cfg("bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3)
    _, r1 = build(c, seed=0)
    assert {v["cache"] for v in r1["institutions"].values()} == {"built"}
    _, r2 = build(cfg("bigearthnet_v1", ben1["root"], tmp_path, classes=BEN3, resize=60), seed=0)
    assert {v["cache"] for v in r2["institutions"].values()} == {"built"}
    _, r3 = build(c, seed=0)
    assert {v["cache"] for v in r3["institutions"].values()} == {"reused"}
    sid = r3 and next(iter(load_source(c, seed=0)[1].split("train").ids))
    band = Path(ben1["root"]) / "BigEarthNet-v1.0" / sid / f"{sid}_B04.tif"
    st = band.stat()
    os.utime(band, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, r4 = build(c, seed=0)
    assert r4["institutions"]["s2"]["cache"] == "built" and r4["institutions"]["s1"]["cache"] == "reused"


def test_prepare_data_report_and_presets(euro, tmp_path, capsys):
    conf = load_config(
        [f"data={name}" for name in ["eurosat_s1_rgb"]]
        + [
            f"data.root={euro['root']}",
            f"data.cache_dir={tmp_path}",
            "data.train_per_class=2",
            "data.val_per_class=1",
            "data.test_per_class=1",
        ]
    )
    report = prepare_data(conf)
    out = capsys.readouterr().out
    assert "s1: cache built" in out and "rgb: cache built" in out and "AnnualCrop: 2" in out
    assert report["institutions"]["rgb"]["counts"]["val"]["SeaLake"] == 1 and report["skipped_total"] == 0
    assert Path(report["report_file"]).is_file()
    assert prepare_data(conf, echo=False)["institutions"]["s1"]["cache"] == "reused"


def test_dispatcher_loads_real_institutions(euro, tmp_path):
    from uml_fed.data import institution_names, load_institutions

    conf = load_config(["data=eurosat_s1_rgb", f"data.root={euro['root']}", f"data.cache_dir={tmp_path}",
                        "data.train_per_class=2", "data.val_per_class=1", "data.test_per_class=1"])  # fmt: skip
    assert institution_names(conf) == ["s1", "rgb"]
    insts = load_institutions(conf)
    assert [i.name for i in insts] == ["s1", "rgb"] and all(i.mean is not None for i in insts)
    (rgb,) = load_institutions(conf, only="rgb")
    assert rgb.split("train").ids == insts[1].split("train").ids


@pytest.mark.parametrize(
    "experiment",
    [
        f"{b}_{k}_{s}"
        for b in ("bigearthnet", "sen12ms", "eurosat_s1_rgb")
        for k in ("bimodal", "finegrained")
        for s in ("full", "lowdata")
    ]
    + ["unrelated_auxiliary"],
)
def test_experiment_presets_compose(experiment):
    c = load_config([f"experiment={experiment}", "data.root=/nowhere"])
    assert c.name == experiment and c.data.source != "synthetic" and c.model.width == 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if c.data.source != "folder":  # folder band names come from files
            names = real_institution_names(c.data)
            assert len(names) == (
                2 if "bimodal" in experiment else {"bigearthnet": 14, "sen12ms": 15}.get(experiment.split("_")[0], 5)
            )
