"""Institutions as first-class things: several per sensor, pools partitioned with flwr-datasets
(IID, Dirichlet, natural), explicit institution lists, config errors, and the default data unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from uml_fed.config import ConfigError, DataConfig, InstitutionConfig, PartitionConfig, load_config
from uml_fed.data import DataError, institution_names, institution_specs, load_institutions
from uml_fed.data.loading import load_source
from uml_fed.data.sources import fixtures
from uml_fed.data.sources.archive import scene_ids
from uml_fed.data.sources.synthetic import GRASS, SOIL, render_optical, render_sar

SMALL = ["data.train_per_class=10", "data.val_per_class=5", "data.test_per_class=5", "data.patch_size=8"]
SPLITS = ("train", "val", "test")
BEN3 = ["Arable land", "Coniferous forest", "Marine waters"]
SEN3 = ["Savannas", "Croplands", "Water bodies"]


def synthetic(*extra: str):
    return load_config([*SMALL, *extra])


def parted(method: str, *extra: str, k: int = 3):
    return synthetic(f"data.partition.institutions={k}", f"data.partition.method={method}", *extra)


def ids_of(inst, split: str | None = None) -> set[str]:
    return {i for s, v in inst.splits.items() if split in (None, s) for i in v.ids}


def assert_disjoint(insts) -> None:
    for a in insts:
        for b in insts:
            if a.name < b.name:
                assert not ids_of(a) & ids_of(b), (a.name, b.name)


def digest(insts) -> str:
    h = hashlib.sha1()
    for inst in insts:
        h.update(inst.name.encode())
        for s in SPLITS:
            sp = inst.split(s)
            h.update(sp.images.tobytes()), h.update(sp.labels.tobytes()), h.update("|".join(sp.ids).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ default data unchanged


def test_default_synthetic_data_is_bit_identical_to_before_institutions():
    """Digests computed on 78e8b8a, before institutions and regions existed: the evidence experiments run
    on this data.  Each split has its own random stream, so the default config's train split is this
    config's (only val/test are made smaller here to keep the test fast)."""
    insts = load_institutions(load_config(["data.val_per_class=5", "data.test_per_class=10"]))
    train = {i.name: hashlib.sha1(i.split("train").images.tobytes()).hexdigest() for i in insts}
    assert train == {"s1": "9179945a16930d31c9f8561ffef59dc82d13b625", "s2": "bfaffe5138944193976c4001e862bb9b0133533a"}
    assert digest(insts) == "17817a716bcf96afc6049645a0093c81da7e9e48"
    per_band = load_config(
        ["data=synthetic_per_band", "data.train_per_class=10", "data.val_per_class=5", "data.test_per_class=10"]
    )
    assert digest(load_institutions(per_band)) == "c63774d9d07249561fb8b8d1667854072eff060c"
    objects = [
        "data.modalities=[s1,objects]",
        "data.train_per_class=10",
        "data.val_per_class=5",
        "data.test_per_class=10",
    ]
    assert digest(load_institutions(load_config(objects))) == "a5bbcae8d8aa23bcc2af505f96453cb2359f61fd"


def test_default_institutions_are_one_per_modality():
    specs = institution_specs(load_config([]))
    assert [(s.name, s.modality, s.sensor, s.part, s.parts) for s in specs] == [
        ("s1", "s1", "s1", -1, 1),
        ("s2", "s2", "s2", -1, 1),
    ]
    assert institution_names(load_config(["data=synthetic_per_band"]))[:3] == ["s1_VV", "s1_VH", "s2_B02"]


# ------------------------------------------------------------------------------------------ synthetic partitions


@pytest.mark.parametrize("method", ["iid", "dirichlet", "natural"])
def test_synthetic_partitions_cover_the_pool_disjointly_and_reproducibly(method):
    cfg = parted(method, "data.partition.alpha=1.0")
    insts = load_institutions(cfg)
    assert [(i.name, i.modality) for i in insts] == [(f"{m}_{k}", m) for m in ("s1", "s2") for k in range(3)]
    assert [s.part for s in institution_specs(cfg)] == [0, 1, 2, 0, 1, 2]
    assert_disjoint(insts)
    # the pool = the institution named after the modality (same stream), with its regions' effect
    pool = {i.name: i for i in load_institutions(synthetic("data.region_effect=1"))}
    for m in ("s1", "s2"):
        parts = [i for i in insts if i.modality == m]
        for s in SPLITS:
            assert set().union(*(ids_of(p, s) for p in parts)) == ids_of(pool[m], s)
    again = load_institutions(cfg)
    assert [ids_of(i) for i in again] == [ids_of(i) for i in insts]
    other = load_institutions(load_config([*SMALL, "seed=1", *cfg_overrides(method)]))
    assert [ids_of(i) for i in other] != [ids_of(i) for i in insts]


def cfg_overrides(method: str) -> list[str]:
    return ["data.partition.institutions=3", f"data.partition.method={method}", "data.partition.alpha=1.0"]


def test_partitioned_pool_holds_the_pool_scenes_pixel_for_pixel():
    """A part's samples are the pool's samples (raw pixels: undo each one's own normalisation)."""
    (pool,) = load_institutions(synthetic("data.modalities=[s2]", "data.region_effect=1"))
    part = load_institutions(parted("iid", "data.modalities=[s2]"), only="s2_1")[0]
    raw = lambda inst, s: inst.split(s).images * inst.std[None, :, None, None] + inst.mean[None, :, None, None]  # noqa: E731
    where = {sid: k for k, sid in enumerate(pool.split("test").ids)}
    rows = [where[sid] for sid in part.split("test").ids]
    np.testing.assert_allclose(raw(part, "test"), raw(pool, "test")[rows], rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(part.split("test").labels, pool.split("test").labels[rows])


def test_natural_partition_gives_each_institution_one_region():
    insts = load_institutions(parted("natural"))
    regions = [{r for s in i.splits.values() for r in s.meta["region"]} for i in insts]
    assert regions == [{"boreal"}, {"mediterranean"}, {"temperate"}] * 2  # sorted region names
    two = load_institutions(parted("natural", "data.modalities=[s1]", k=2))
    assert [sorted({r for s in i.splits.values() for r in s.meta["region"]}) for i in two] == [
        ["boreal", "mediterranean"], ["temperate"]
    ]  # fmt: skip


def test_dirichlet_skews_labels_measurably():
    def dominance(insts) -> float:
        """Mean share of each institution's samples held by its two largest classes."""
        shares = []
        for inst in insts:
            counts = np.sort(np.bincount(np.concatenate([s.labels for s in inst.splits.values()]), minlength=6))
            shares.append(counts[-2:].sum() / counts.sum())
        return float(np.mean(shares))

    sizes = ["data.train_per_class=30", "data.val_per_class=15", "data.test_per_class=15", "data.modalities=[s1]"]
    iid = load_institutions(parted("iid", *sizes))
    skew = load_institutions(parted("dirichlet", *sizes, "data.partition.alpha=0.1", "data.partition.min_size=20"))
    assert dominance(iid) < 0.45 < 0.65 < dominance(skew)  # IID: ~2/6 of the samples; alpha=0.1: ~3/4


def test_only_loads_exactly_that_institutions_part():
    cfg = parted("dirichlet", "data.partition.alpha=1.0")
    full = {i.name: i for i in load_institutions(cfg)}
    (one,) = load_institutions(cfg, only="s2_2")
    assert one.name == "s2_2" and one.modality == "s2"
    for s in SPLITS:
        assert one.split(s).ids == full["s2_2"].split(s).ids
        np.testing.assert_array_equal(one.split(s).images, full["s2_2"].split(s).images)
    with pytest.raises(DataError, match="unknown modality 's2'"):  # partitioned: the modality is no institution
        load_institutions(cfg, only="s2")


def test_regions_shift_phenology_soil_and_backscatter_only_when_asked():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    seg = np.zeros((4, 8, 8), dtype=np.int64)
    boreal, temperate, med = (np.full(4, r) for r in range(3))
    grass, soil = np.full((4, 8, 8), GRASS), np.full((4, 8, 8), SOIL)
    nir = lambda maps, region, e: render_optical(maps, seg, ["B08"], rng(), 1.0, region, e).mean()  # noqa: E731
    assert nir(grass, boreal, 1.0) < nir(grass, temperate, 1.0)  # short season: less NIR vigour
    assert nir(soil, med, 1.0) > 1.15 * nir(soil, temperate, 1.0)  # dry bright soils
    np.testing.assert_array_equal(
        render_optical(grass, seg, ["B08"], rng(), 1.0, boreal, 0.0), render_optical(grass, seg, ["B08"], rng(), 1.0)
    )
    vv = lambda region: render_sar(soil, seg, ["VV"], rng(), 4.4, region, 1.0).mean()  # noqa: E731
    assert vv(boreal) > vv(temperate) + 0.5 > vv(med) + 1.5  # wet soils are bright in SAR


# ------------------------------------------------------------------------------------------ explicit institutions


def test_explicit_synthetic_institutions_share_a_sensor_with_their_own_scenes():
    cfg = synthetic(
        "data.institutions=[{name:north,modality:s2},{name:south,modality:s2},{name:radar,modality:s1},"
        "{name:nir,modality:s2_nir,sensor:s2,bands:[B04,B08]}]",
        "+data.sizes.south.train_per_class=4",
    )
    specs = institution_specs(cfg)
    assert [(s.name, s.modality, s.sensor) for s in specs] == [
        ("north", "s2", "s2"), ("south", "s2", "s2"), ("radar", "s1", "s1"), ("nir", "s2_nir", "s2")
    ]  # fmt: skip
    insts = load_institutions(cfg)
    assert_disjoint(insts)
    north, south, _, nir = insts
    assert north.bands == south.bands and nir.bands == ["B04", "B08"] and nir.modality == "s2_nir"
    assert len(south.split("train")) == 6 * 4 and len(north.split("train")) == 6 * 10
    assert not np.array_equal(north.split("val").images, south.split("val").images)


# ------------------------------------------------------------------------------------------ real fixtures


@pytest.fixture(scope="module")
def ben2(tmp_path_factory):
    return fixtures.write_bigearthnet_v2(tmp_path_factory.mktemp("ben2"), per_class=24, classes=BEN3, seed=2)


@pytest.fixture(scope="module")
def sen(tmp_path_factory):
    return fixtures.write_sen12ms(tmp_path_factory.mktemp("sen"), per_class=12, classes=SEN3, seed=3)


def real(source: str, info: dict, cache: Path, **kw) -> DataConfig:
    base = dict(
        source=source, root=info["root"], cache_dir=str(cache), train_per_class=3, val_per_class=3, test_per_class=3
    )
    return DataConfig(**(base | kw))


def test_bigearthnet_v2_natural_partition_by_country(ben2, tmp_path):
    part = PartitionConfig(institutions=3, method="natural", column="country")
    insts = load_source(real("bigearthnet_v2", ben2, tmp_path, classes=BEN3, partition=part), seed=0)
    assert [i.name for i in insts] == ["s1_0", "s1_1", "s1_2", "s2_0", "s2_1", "s2_2"]
    countries = [{ben2["meta"][sid]["country"] for sid in ids_of(i)} for i in insts]
    assert countries == [{"Austria"}, {"Finland"}, {"Portugal"}] * 2
    assert all(
        i.split("train").meta["country"] == [ben2["meta"][s]["country"] for s in i.split("train").ids] for i in insts
    )
    assert_disjoint(insts)  # across institutions AND sensors: unpaired
    # the parts of a modality are exactly the scenes the unpartitioned institution of that modality gets
    whole = {i.name: i for i in load_source(real("bigearthnet_v2", ben2, tmp_path, classes=BEN3), seed=0)}
    for m in ("s1", "s2"):
        for s in SPLITS:
            assert set().union(*(ids_of(i, s) for i in insts if i.modality == m)) == ids_of(whole[m], s)
    (alone,) = load_source(
        real("bigearthnet_v2", ben2, tmp_path / "node", classes=BEN3, partition=part), seed=0, only="s1_2"
    )
    assert scene_ids([alone]) == {"s1_2": ids_of(insts[2])}


def test_real_dirichlet_partition_reproducible_for_a_seed(ben2, tmp_path):
    part = PartitionConfig(institutions=2, method="dirichlet", alpha=1.0)
    cfg = real("bigearthnet_v2", ben2, tmp_path, classes=BEN3, modalities=["s2"], partition=part)
    first, again = load_source(cfg, seed=0), load_source(cfg, seed=0)
    assert [ids_of(i) for i in first] == [ids_of(i) for i in again]
    assert [ids_of(i) for i in load_source(cfg, seed=5)] != [ids_of(i) for i in first]
    assert_disjoint(first)


def test_sen12ms_natural_partition_by_roi(sen, tmp_path):
    part = PartitionConfig(institutions=2, method="natural", column="roi")
    insts = load_source(
        real(
            "sen12ms", sen, tmp_path, classes=SEN3, train_per_class=3, val_per_class=1, test_per_class=1, partition=part
        ),
        seed=0,
    )
    rois = [{sen["meta"][sid]["roi"] for sid in ids_of(i)} for i in insts]
    assert not rois[0] & rois[1] and not rois[2] & rois[3]  # the ROIs of one sensor's pool are split, not shared
    assert_disjoint(insts)


def test_explicit_real_institutions_of_one_sensor_get_disjoint_scenes(sen, tmp_path):
    insts = [InstitutionConfig("a", "s2"), InstitutionConfig("b", "s2"), InstitutionConfig("c", "s1")]
    cfg = real(
        "sen12ms", sen, tmp_path, classes=SEN3, train_per_class=2, val_per_class=1, test_per_class=1, institutions=insts
    )
    loaded = load_source(cfg, seed=0)
    assert [(i.name, i.modality) for i in loaded] == [("a", "s2"), ("b", "s2"), ("c", "s1")]
    assert_disjoint(loaded)
    (b,) = load_source(cfg, seed=0, only="b")
    assert ids_of(b) == ids_of(loaded[1])


# ------------------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["data.partition.institutions=0"], r"data.partition.institutions=0 must be >= 1"),
        (
            ["data.partition.method=kmeans"],
            r"data.partition.method='kmeans' must be one of \['iid', 'dirichlet', 'natural'\]",
        ),
        (["data.partition.alpha=0"], r"data.partition.alpha=0.0 must be > 0"),
        (["data.partition.min_size=-1"], r"data.partition.min_size=-1 must be >= 0"),
        (["data.institutions=[{name:a,modality:s2},{name:a,modality:s1}]"], r"data.institutions names 'a' twice"),
        (["data.institutions=[{name:a}]"], r"data.institutions\[0\] needs a name and a modality"),
        (["data.institutions=[{name:a,modality:s2}]", "data.partition.institutions=2"], "list every institution there"),
        (["data.institutions=[{name:a,modality:s2}]", "data.per_band=true"], "give each band its own entry"),
        (["data.paired=true", "data.partition.institutions=2"], r"cannot be partitioned"),
        (["data.region_effect=-1"], r"data.region_effect=-1.0 must be >= 0"),
        (["data.constant_bands=maybe"], r"data.constant_bands='maybe' must be one of \['error', 'warn'\]"),
    ],
)
def test_config_errors_name_the_key_and_the_remedy(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["data.institutions=[{name:a,modality:sentinel3}]"], r"unknown modality 'sentinel3'"),
        (
            ["data.institutions=[{name:a,modality:s2,bands:[B02]},{name:b,modality:s2,bands:[B03]}]"],
            r"hold different bands",
        ),
        (["data.institutions=[{name:a,modality:s2,bands:[B13]}]"], r"'B13' is not a band of synthetic sensor 's2'"),
        (
            ["data.partition.institutions=2", "+data.sizes.s1_0.train_per_class=5"],
            r"data.sizes names \['s1_0'\].*data.sizes.<modality>",
        ),
        (
            ["data.partition.institutions=2", "data.partition.method=natural", "data.partition.column=country"],
            r"data.partition.column='country' is not scene metadata of synthetic \(\['region'\]\)",
        ),
    ],
)
def test_data_errors_before_any_io(overrides, match):
    with pytest.raises(DataError, match=match):
        institution_specs(load_config(overrides))


def test_natural_partitions_refused_where_there_is_no_metadata(tmp_path):
    for source in ("eurosat", "folder"):
        part = PartitionConfig(institutions=2, method="natural")
        d = DataConfig(source=source, root=str(tmp_path), modalities=["s1", "rgb"], partition=part)
        with pytest.raises(DataError, match=rf"is not scene metadata of {source}.*method=iid or dirichlet"):
            load_source(d)  # before any file is looked at: tmp_path holds no archive


def test_partition_errors_name_the_institution_and_the_remedy():
    with pytest.raises(DataError, match=r"has only 3 'region' value\(s\).*lower data.partition.institutions"):
        load_institutions(parted("natural", k=4))
    tiny = ["data.train_per_class=1", "data.val_per_class=1", "data.test_per_class=1", "data.modalities=[s1]"]
    with pytest.raises(DataError, match=r"institution 's1_\d' gets no .* samples .*raise data.partition.alpha"):
        load_institutions(parted("dirichlet", *tiny, "data.partition.alpha=0.05", k=4))
    with pytest.warns(UserWarning, match="min_partition_size"):
        with pytest.raises(
            DataError, match=r"cannot split the s1 pool of 18 samples into 3 institutions.*raise data.partition.alpha"
        ):
            load_institutions(parted("dirichlet", *tiny, "data.partition.alpha=0.05", "data.partition.min_size=7"))
