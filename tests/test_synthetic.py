import numpy as np
import pytest

from uml_fed.config import DataConfig
from uml_fed.data.loading import load_source
from uml_fed.data.sources.synthetic import (
    CLASSES,
    S2_BANDS,
    WATER,
    material_maps,
    render_optical,
    render_sar,
)


def _data(**kw):
    base = dict(train_per_class=10, val_per_class=4, test_per_class=4, patch_size=16)
    base.update(kw)
    return DataConfig(**base)


def test_deterministic_from_seed_and_different_across_seeds():
    a = load_source(_data(), seed=3)
    b = load_source(_data(), seed=3)
    c = load_source(_data(), seed=4)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x.split("train").images, y.split("train").images)
        assert not np.array_equal(x.split("train").images, z.split("train").images)


def test_institutions_are_unpaired_and_balanced():
    s1, s2 = load_source(_data(), seed=0)
    assert set(s1.split("train").ids).isdisjoint(s2.split("train").ids)
    for inst in (s1, s2):
        counts = np.bincount(inst.split("train").labels, minlength=len(CLASSES))
        assert (counts == 10).all()
    assert s1.bands == ["VV", "VH"] and len(s2.bands) == 12 and "B10" not in s2.bands
    assert s1.classes == s2.classes == CLASSES


def test_per_band_institutions_give_the_fine_grained_shape():
    insts = load_source(_data(per_band=True, bands={"s1": ["VV", "VH"], "s2": ["B04", "B08", "B11"]}), seed=0)
    assert [i.name for i in insts] == ["s1_VV", "s1_VH", "s2_B04", "s2_B08", "s2_B11"]
    assert all(i.in_channels == 1 for i in insts)


def test_optical_spectra_follow_typical_signatures():
    rng = np.random.default_rng(0)
    bands = S2_BANDS
    b = {name: i for i, name in enumerate(bands)}
    one = np.zeros((10, 16, 16), dtype=np.int64)  # one parcel per scene
    pure = lambda material: render_optical(np.full((10, 16, 16), material), one, bands, rng, 1.0).mean(axis=(0, 2, 3))  # noqa: E731
    water, forest, urban, soil = pure(WATER), pure(1), pure(6), pure(4)
    assert water[b["B08"]] < 300 and water[b["B11"]] < 200  # water dark in NIR/SWIR
    assert forest[b["B07"]] > 2.5 * forest[b["B04"]]  # red-edge rise
    assert forest[b["B08"]] > 3 * forest[b["B04"]]
    spread = urban[[b[k] for k in ("B02", "B04", "B08", "B11")]]
    assert spread.max() / spread.min() < 1.8  # bright and flat
    assert soil[b["B02"]] < soil[b["B04"]] < soil[b["B08"]] < soil[b["B11"]]  # rising bare soil
    forest_scenes = render_optical(*material_maps(1, 20, 16, rng, mixing=0.0), bands, rng, 1.0).mean(axis=(0, 2, 3))
    water_scenes = render_optical(*material_maps(3, 20, 16, rng, mixing=0.0), bands, rng, 1.0).mean(axis=(0, 2, 3))
    assert forest_scenes[b["B08"]] > 5 * water_scenes[b["B08"]]  # class scenes keep the contrast


def test_sar_speckle_has_the_configured_equivalent_number_of_looks():
    rng = np.random.default_rng(0)
    maps = np.full((50, 32, 32), WATER)
    db = render_sar(maps, np.zeros_like(maps), ["VV"], rng, enl=4.4)[:, 0]
    lin = 10 ** (db / 10)
    # per scene, intensity mean^2 / var estimates the ENL (natural 1 dB texture lowers it a little)
    enl = (lin.mean(axis=(1, 2)) ** 2 / lin.var(axis=(1, 2))).mean()
    assert 3.0 < enl < 4.6
    assert -30 < db.mean() < -18  # water is dark


def test_sar_is_the_weaker_modality_in_a_simple_linear_probe():
    """Nearest-class-mean on per-band scene means: optical separates classes better than SAR."""
    s1, s2 = load_source(_data(train_per_class=40, test_per_class=40, patch_size=16), seed=0)

    def ncm_acc(inst):
        f = lambda s: s.images.mean(axis=(2, 3))  # noqa: E731
        tr, te = inst.split("train"), inst.split("test")
        centers = np.stack([f(tr)[tr.labels == c].mean(0) for c in range(len(CLASSES))])
        pred = ((f(te)[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
        return (pred == te.labels).mean()

    assert ncm_acc(s2) > ncm_acc(s1) + 0.1


def test_bad_synthetic_config_is_refused():
    from uml_fed.data import DataError

    with pytest.raises(DataError, match="'B13' is not a band of synthetic sensor 's2'"):
        load_source(_data(bands={"s2": ["B02", "B13"]}), seed=0)
    with pytest.raises(DataError, match="classes"):
        load_source(_data(classes=["a", "b"]), seed=0)


def test_parcel_geometry_shows_in_both_sensors():
    """Arable parcels vary crop stage and soil moisture parcel by parcel: the parcel map shows in the
    optical NIR and, through speckle, in the SAR backscatter averaged over each parcel."""
    rng = np.random.default_rng(1)
    maps, seg = material_maps(0, 30, 32, rng, mixing=0.0)
    nir = render_optical(maps, seg, ["B08"], rng, 1.0)[:, 0]
    vh = render_sar(maps, seg, ["VH"], rng, enl=4.4)[:, 0]
    for img in (nir, vh):
        within, between = [], []
        for i in range(len(seg)):
            means = [img[i][seg[i] == p].mean() for p in np.unique(seg[i])]
            between.append(np.std(means))
            within.append(
                np.mean([img[i][seg[i] == p].std() / np.sqrt((seg[i] == p).sum()) for p in np.unique(seg[i])])
            )
        assert np.mean(between) > 3 * np.mean(within)  # parcel means differ far beyond their noise


def test_unrelated_objects_modality_shares_labels_not_meaning():
    objects = load_source(_data(modalities=["s1", "objects"]), seed=0)[1]
    assert objects.bands == ["R", "G", "B"] and objects.classes == CLASSES
    assert np.bincount(objects.split("train").labels).tolist() == [10] * len(CLASSES)
