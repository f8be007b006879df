"""Bad input to the real readers: each error names the file or value; skip_unreadable counts what it skips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import build

from uml_fed.config import DataConfig, load_config
from uml_fed.data.core import DataError
from uml_fed.data.loading import load_source
from uml_fed.data.prepare import prepare_data
from uml_fed.data.sources import fixtures
from uml_fed.data.sources.base import MissingDataError
from uml_fed.data.sources.fixtures import from_origin
from uml_fed.data.specs import data_specs

CLS = ["Arable land", "Pastures"]


def real_institution_names(c: DataConfig) -> list[str]:
    return [s.name for s in data_specs(c)]


def cfg(source: str, root, cache, **kw) -> DataConfig:
    base = dict(
        source=source, root=str(root), cache_dir=str(cache), train_per_class=2, val_per_class=1, test_per_class=1
    )
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture()
def ben(tmp_path):
    info = fixtures.write_bigearthnet_v1(tmp_path / "ben", per_class=10, classes=CLS, multi_label=0, snow=0, cloud=0)
    return Path(info["root"]), info


def _patch(root: Path, info: dict, cls: str = "Arable land") -> str:
    return sorted(p for p, c in info["labels"].items() if c == cls)[0]


def _all_s2(root: Path, info: dict) -> list[str]:
    return sorted(info["labels"])


def test_missing_root_shows_layout(tmp_path):
    with pytest.raises(MissingDataError, match=r"(?s)does not exist.*Expected layout.*BigEarthNet-v1.0/<S2 patch>"):
        load_source(cfg("bigearthnet_v1", tmp_path / "absent", tmp_path))
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        load_source(DataConfig(source="sen12ms"))


def test_missing_modality_folder(tmp_path):
    fixtures.write_eurosat(tmp_path / "e", per_class=1, modalities=("rgb",))
    with pytest.raises(MissingDataError, match=r"no s1 folder under .*EuroSAT-SAR"):
        load_source(cfg("eurosat", tmp_path / "e", tmp_path, modalities=["s1", "rgb"]))


def test_missing_band_file(ben, tmp_path):
    root, info = ben
    for p in _all_s2(root, info):  # every patch loses B8A: the error names the file
        (root / "BigEarthNet-v1.0" / p / f"{p}_B8A.tif").unlink()
    with pytest.raises(MissingDataError, match=r"bigearthnet_v1 s2 band B8A: file '.*_B8A.tif' is missing"):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))


def test_corrupt_geotiff(ben, tmp_path):
    root, info = ben
    for p in _all_s2(root, info):
        (root / "BigEarthNet-v1.0" / p / f"{p}_B02.tif").write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(
        DataError, match=r"cannot read '.*_B02.tif': the file is truncated or corrupt .*skip_unreadable"
    ):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))


def test_a_truncated_geotiff_says_so_and_names_the_remedy(ben, tmp_path):
    root, info = ben
    for p in _all_s2(root, info):
        f = root / "BigEarthNet-v1.0" / p / f"{p}_B03.tif"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))
    msg = str(err.value)
    assert "_B03.tif': the file is truncated or corrupt (" in msg and "See previous exception" not in msg
    assert msg.endswith("data.skip_unreadable=true skips unreadable files") and "\n" not in msg


def test_wrong_dtype(ben, tmp_path):
    root, info = ben
    for p in _all_s2(root, info):
        fixtures.write_geotiff(
            root / "BigEarthNet-v1.0" / p / f"{p}_B03.tif",
            np.ones((120, 120), np.int16),
            "EPSG:32633",
            from_origin(0, 0, 10, 10),
        )
    with pytest.raises(DataError, match=r"_B03.tif' has dtype int16, expected uint16"):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))


def test_wrong_native_size(ben, tmp_path):
    root, info = ben
    for p in _all_s2(root, info):
        fixtures.write_geotiff(
            root / "BigEarthNet-v1.0" / p / f"{p}_B05.tif",
            np.arange(120 * 120, dtype=np.uint16).reshape(120, 120),
            "EPSG:32633",
            from_origin(0, 0, 10, 10),
        )
    with pytest.raises(DataError, match=r"_B05.tif' is 120x120 pixels, expected 60x60 \(data.resize=<side> resamples"):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))
    s1, s2 = load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS, resize=60))  # any native size, resampled
    assert s2.split("train").images.shape[1:] == (12, 60, 60) and s1.split("train").images.shape[1:] == (2, 60, 60)


def test_wrong_band_count(tmp_path):
    info = fixtures.write_eurosat(tmp_path / "e", per_class=3, modalities=("ms",))
    tif = Path(info["root"]) / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif"
    for f in tif.glob("*/*.tif"):
        fixtures.write_geotiff(f, np.ones((12, 64, 64), np.uint16), "EPSG:32631", from_origin(0, 0, 10, 10))
    with pytest.raises(DataError, match=r"eurosat ms: '.*\.tif' has 12 bands, expected 13"):
        load_source(cfg("eurosat", tmp_path / "e", tmp_path, modalities=["ms"], train_per_class=1))


def test_nan_pixels(ben, tmp_path):
    root, info = ben
    for d in (root / "BigEarthNet-S1-v1.0").iterdir():
        bad = np.full((120, 120), -12.0, np.float32)
        bad[3, 4] = np.nan
        bad[5, 5] = np.inf
        fixtures.write_geotiff(d / f"{d.name}_VH.tif", bad, "EPSG:32633", from_origin(0, 0, 10, 10))
    with pytest.raises(DataError, match=r"bigearthnet_v1 s1 band VH: '.*_VH.tif' has 2 NaN/inf pixel values"):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))


def test_unknown_class_and_band_names(tmp_path):
    with pytest.raises(DataError, match=r"'Urban' is not a class of bigearthnet_v1"):
        load_source(cfg("bigearthnet_v1", tmp_path, tmp_path, classes=["Urban"]))
    with pytest.raises(DataError, match=r"'B10' is not a band of bigearthnet_v1 s2"):
        real_institution_names(cfg("bigearthnet_v1", tmp_path, tmp_path, bands={"s2": ["B04", "B10"]}))
    with pytest.raises(DataError, match=r"'optical' is not a modality of sen12ms"):
        real_institution_names(cfg("sen12ms", tmp_path, tmp_path, modalities=["optical"]))
    with pytest.raises(DataError, match=r"data.source='landsat' is not a known source"):
        real_institution_names(cfg("landsat", tmp_path, tmp_path))


def test_unknown_corine_label_names_the_file(ben, tmp_path):
    root, info = ben
    p = _patch(root, info)
    js = root / "BigEarthNet-v1.0" / p / f"{p}_labels_metadata.json"
    meta = json.loads(js.read_text())
    meta["labels"] = ["Lunar regolith"]
    js.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"{p}_labels_metadata.json: 'Lunar regolith' is not a CORINE-43 class"):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))


def test_eurosat_unknown_class_folder(tmp_path):
    fixtures.write_eurosat(tmp_path / "e", per_class=1, modalities=("rgb",))
    (tmp_path / "e/2750/Glacier").mkdir()
    (tmp_path / "e/2750/Glacier/Glacier_1.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"class folder 'Glacier' .* is not a EuroSAT class"):
        load_source(cfg("eurosat", tmp_path / "e", tmp_path, modalities=["rgb"]))


def test_eurosat_flat_file_without_a_class_name(tmp_path):
    fixtures.write_eurosat(
        tmp_path / "e", per_class=1, modalities=("s1",), sar_dir="eurosat_s1/all_imgs", sar_flat=True
    )
    (tmp_path / "e/eurosat_s1/all_imgs/Glacier_1.tif").write_bytes(b"")
    with pytest.raises(DataError, match=r"file 'eurosat_s1/all_imgs/Glacier_1.tif' is not named <Class>_<n>.tif with"):
        load_source(cfg("eurosat", tmp_path / "e", tmp_path, modalities=["s1"]))


def test_absent_label_files(ben, tmp_path):
    root, info = ben
    p = _patch(root, info)
    (root / "BigEarthNet-v1.0" / p / f"{p}_labels_metadata.json").unlink()
    with pytest.raises(MissingDataError, match=rf"label file '.*{p}_labels_metadata.json' is missing"):
        load_source(cfg("bigearthnet_v1", root, tmp_path, classes=CLS))
    (tmp_path / "v2").mkdir()
    with pytest.raises(MissingDataError, match=r"(?s)label file '.*metadata.parquet' is missing.*Expected layout"):
        load_source(cfg("bigearthnet_v2", tmp_path / "v2", tmp_path, classes=CLS))


def test_sen12ms_lc_codes_outside_igbp_without_nodata(tmp_path):
    info = fixtures.write_sen12ms(tmp_path / "s", per_class=1, classes=["Savannas"], with_pkl=False, size=32)
    lc = sorted((Path(info["root"]) / "ROIs1868_summer").glob("lc_*/*.tif"))[0]
    fixtures.write_geotiff(lc, np.full((4, 32, 32), 255, np.uint16), "EPSG:32633", from_origin(0, 0, 10, 10))
    with pytest.raises(
        DataError, match=r"lc_1_p0.tif' band 1 has IGBP codes outside 1..17; pixels to ignore must carry"
    ):
        load_source(cfg("sen12ms", info["root"], tmp_path, classes=["Savannas"], resize=32))


def test_sen12ms_missing_season(tmp_path):
    fixtures.write_sen12ms(tmp_path / "s", per_class=1, classes=["Savannas"], season="winter", with_pkl=False)
    with pytest.raises(MissingDataError, match=r"season folder '.*ROIs1868_summer' is missing"):
        load_source(cfg("sen12ms", tmp_path / "s", tmp_path, classes=["Savannas"]))
    with pytest.raises(DataError, match=r"data.season='monsoon' is not a SEN12MS season"):
        real_institution_names(cfg("sen12ms", tmp_path / "s", tmp_path, season="monsoon"))


def test_skip_unreadable_warns_replaces_and_counts(ben, tmp_path):
    root, info = ben
    c = cfg("bigearthnet_v1", root, tmp_path, classes=CLS, paired=True, train_per_class=7)
    train = load_source(c)[1].split("train")
    bad = train.ids[list(train.labels).index(CLS.index("Arable land"))]  # an 'Arable land' scene the subset uses
    (root / "BigEarthNet-v1.0" / bad / f"{bad}_B02.tif").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):  # default: fail loudly
        load_source(c)
    conf = load_config(
        ["data=bigearthnet_v1", f"data.root={root}", f"data.cache_dir={tmp_path}", "data.paired=true",
         "data.classes=[Arable land,Pastures]", "data.skip_unreadable=true", "data.train_per_class=7",
         "data.val_per_class=1", "data.test_per_class=1"]
    )  # fmt: skip
    with pytest.warns(UserWarning, match=rf"skipping unreadable patch {bad} \(s2\)"):
        report = prepare_data(conf, echo=False)
    assert report["skipped_total"] == 1 and report["institutions"]["s2"]["skipped"][0]["id"] == bad
    counts = report["institutions"]["s2"]["counts"]
    assert counts["train"]["Arable land"] == 7 and counts["test"]["Arable land"] == 1  # replaced by a spare
    full = cfg("bigearthnet_v1", root, tmp_path, classes=CLS, paired=True, skip_unreadable=True, train_per_class=8)
    with pytest.warns(UserWarning, match="skipping unreadable"):  # 10 scenes, 1 unreadable, 10 needed
        with pytest.raises(DataError, match=r"class 'Arable land': only 0 readable scenes left for the 'test' split"):
            load_source(full)


@pytest.mark.parametrize("source", ["folder", "eurosat"])
def test_constant_band_is_an_error_naming_institution_and_band(source, tmp_path):
    """A z-score divides by the band's std: a band constant over the training split is refused (or kept unscaled)."""
    if source == "folder":
        info = fixtures.write_folder(tmp_path / "d", modalities={"arr": {"ext": "npy", "bands": 3, "size": 8}})
        for f in Path(info["root"]).glob("arr/*/*.npy"):
            x = np.load(f)
            x[1] = 7.0
            np.save(f, x)
        kw, inst, band = dict(modalities=["arr"]), "arr", "b2"
    else:
        fixtures.write_eurosat(tmp_path / "d", per_class=4, classes=["Forest", "River"], modalities=("ms",))
        for f in (tmp_path / "d").rglob("*.tif"):
            with rasterio.open(f) as r:
                x = r.read()
            x[9] = 7  # B10, the 10th band of the file
            fixtures.write_geotiff(f, x, "EPSG:32631", from_origin(0, 0, 10, 10))
        kw, inst, band = dict(modalities=["ms"], classes=["Forest", "River"]), "ms", "B10"
    with pytest.raises(
        DataError,
        match=rf"institution '{inst}': band\(s\) '{band}' \(always 7\) constant over its training split; a z-score "
        r"divides .* or set data.constant_bands=warn",
    ):
        load_source(cfg(source, tmp_path / "d", tmp_path / "c", **kw))
    with pytest.warns(UserWarning, match=rf"'{band}' \(always 7\) constant .*; kept centred but unscaled"):
        (kept,) = load_source(cfg(source, tmp_path / "d", tmp_path / "c", constant_bands="warn", **kw))
    i = kept.bands.index(band)
    assert kept.std[i] == 1 and (kept.split("train").images[:, i] == 0).all()


@pytest.fixture()
def own(tmp_path):
    """Own data, 2-band 16x16 float32 GeoTIFFs and 1-band .npy images, five per class (one spare)."""
    mods = {"s1": {"ext": "tif", "bands": 2, "size": 16}, "arr": {"ext": "npy", "bands": 1, "size": 16}}
    return Path(fixtures.write_folder(tmp_path / "own", modalities=mods, classes=("a", "b"), per_class=5)["root"])


def test_folder_files_unlike_the_majority_are_named_in_one_error(own, tmp_path):
    first, other = sorted(own.glob("s1/*/*.tif"))[0], sorted(own.glob("s1/b/*.tif"))[2]
    fixtures.write_geotiff(first, np.ones((3, 16, 16), np.float32), "EPSG:32633", from_origin(0, 0, 10, 10))
    fixtures.write_geotiff(other, np.ones((2, 20, 20), np.float32), "EPSG:32633", from_origin(0, 0, 10, 10))
    with pytest.raises(
        DataError,
        match=rf"folder s1: 2 of 10 files differ from the majority \(2 band\(s\), 16x16, float32\): '{first}' \(3 band"
        rf"\(s\), 16x16, float32\), '{other}' \(2 band\(s\), 20x20, float32\); fix or remove them",
    ):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["s1"]))
    with pytest.raises(DataError, match=r"1 of 10 files differ .* \(3 band\(s\), 16x16, float32\);"):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["s1"], resize=16))  # mixed sizes are fine now


def test_folder_unreadable_first_file_named_and_skippable(own, tmp_path):
    first = sorted(own.glob("arr/*/*.npy"))[0]
    first.write_bytes(first.read_bytes()[:150])  # truncated: "mmap length is greater than file size"
    with pytest.raises(
        DataError,
        match=rf"folder arr: cannot read '{first}' as .npy: .*; fix or remove it, or set data.skip_unreadable=true",
    ):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["arr"]))
    c = cfg("folder", own, tmp_path / "c", modalities=["arr"], skip_unreadable=True)
    bad = f"a/{first.stem}"
    with pytest.warns(
        UserWarning, match=rf"skipping unreadable patch {bad} \(arr\): folder arr: cannot read '{first}'"
    ):
        (arr,), report = build(c, seed=0)  # drawn for a split, replaced by the class's spare
    assert [x["id"] for x in report["institutions"]["arr"]["skipped"]] == [bad]
    assert arr.bands == ["b1"] and len(arr.split("train")) == 4 and bad not in arr.split("train").ids


def test_folder_odd_file_skipped_when_asked(own, tmp_path):
    """With data.skip_unreadable a file unlike the majority is left to the decoder, which skips and reports it."""
    first = sorted(own.glob("arr/*/*.npy"))[0]
    np.save(first, np.ones((2, 16, 16), np.float32))
    with pytest.raises(DataError, match=rf"1 of 10 files differ .*: '{first}' \(2 band\(s\), 16x16, float32\)"):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["arr"]))
    c = cfg("folder", own, tmp_path / "c", modalities=["arr"], skip_unreadable=True)
    with pytest.warns(
        UserWarning, match=rf"folder arr: '{first}' is \(2, 16, 16\) float32, expected 1 x H x W float32"
    ):
        (arr,), report = build(c, seed=0)
    assert [x["id"] for x in report["institutions"]["arr"]["skipped"]] == [f"a/{first.stem}"]


def _break(own: Path, case: str) -> dict:
    """Spoil the own-data fixture in one way; returns the config keys the case needs."""
    if case == "all unreadable":
        for f in own.glob("arr/*/*.npy"):
            f.write_bytes(b"")
        return dict(modalities=["arr"], skip_unreadable=True)
    if case == "not square":
        for f in own.glob("s1/*/*.tif"):
            fixtures.write_geotiff(f, np.ones((2, 16, 12), np.float32), "EPSG:32633", from_origin(0, 0, 10, 10))
    if case == "no files":
        for f in own.glob("s1/*/*.tif"):
            f.unlink()
    if case == "class folders differ":
        for f in own.glob("arr/b/*"):
            f.unlink()
        (own / "arr/b").rmdir()
        return dict(modalities=["s1", "arr"])
    return dict(modalities=["s1"], bands={"s1": ["VV"]} if case == "band names" else {})


@pytest.mark.parametrize(
    "case, match",
    [
        (
            "all unreadable",
            r"folder arr: none of the 10 files can be read, e.g. folder arr: cannot read '.*\.npy' as \.npy",
        ),
        (
            "not square",
            r"folder s1: the images are 16x12 pixels \(e.g. '.*\.tif'\), not square; set data.resize=<side>",
        ),
        ("no files", r"folder s1: no image files under '.*own/s1'"),
        ("class folders differ", r"class folders of 'arr' \['a'\] differ from 's1' \['a', 'b'\]"),
        (
            "band names",
            r"data.bands.s1 names 1 bands but the files have 2 \(e.g. '.*\.tif'\); .* every channel in file",
        ),
    ],
)
def test_folder_errors_name_the_file_or_key(case, match, own, tmp_path):
    with pytest.raises(DataError, match=match):
        load_source(cfg("folder", own, tmp_path / "c", **_break(own, case)))


def test_a_symbolic_link_to_itself_is_named_and_skippable(own, tmp_path):
    loop = own / "s1" / "a" / "loop.tif"
    loop.symlink_to(loop)
    with pytest.raises(
        DataError, match=rf"folder s1: '{loop}' is a symbolic link that loops or points nowhere; remove"
    ):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["s1"]))
    with pytest.warns(UserWarning, match="a broken symbolic link"):
        (s1,) = load_source(cfg("folder", own, tmp_path / "c", modalities=["s1"], skip_unreadable=True))
    assert len(s1.split("train")) == 4


def _huge(path: Path) -> None:
    """A GeoTIFF whose header declares 100000 x 100000 pixels; its tiles are never written (a few KB)."""
    profile = dict(driver="GTiff", width=100_000, height=100_000, count=2, dtype="float32", tiled=True)
    with rasterio.open(path, "w", **profile, compress="deflate", sparse_ok=True, crs="EPSG:32633") as f:
        f.transform = from_origin(0, 0, 10, 10)


def test_a_file_too_big_for_memory_is_refused_before_reading_and_resize_reads_it_decimated(own, tmp_path):
    for f in sorted(own.glob("s1/*/*.tif")):
        _huge(f)
    with pytest.raises(
        DataError, match=r"2 x 100000 x 100000 values need [0-9.]+ GiB, more than the .* set data\.resize"
    ):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["s1"], constant_bands="warn"))
    with pytest.warns(UserWarning, match="constant"):  # unwritten tiles read as 0 everywhere
        (s1,) = load_source(cfg("folder", own, tmp_path / "c2", modalities=["s1"], resize=8, constant_bands="warn"))
    assert s1.split("train").images.shape[1:] == (2, 8, 8)


def test_a_patch_size_that_cannot_fit_is_refused_before_allocating():
    from uml_fed.data import load_institutions

    with pytest.raises(DataError, match=r"data\.patch_size=100000: .* GiB, more than the .* lower data\.patch_size"):
        load_institutions(load_config(["data.patch_size=100000"]))


def test_a_class_folder_in_one_modality_only_names_it_and_the_remedy(own, tmp_path):
    (own / "s1" / "c").mkdir()
    fixtures.write_geotiff(
        own / "s1" / "c" / "x.tif", np.ones((2, 16, 16), np.float32), "EPSG:32633", from_origin(0, 0, 10, 10)
    )
    with pytest.raises(
        DataError, match=r"\['c'\] in one only\); give every modality the same class folders, or .*data\.classes"
    ):
        load_source(cfg("folder", own, tmp_path / "c", modalities=["s1", "arr"]))
