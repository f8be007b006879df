import pytest
import torch

from uml_fed.config import ModelConfig
from uml_fed.model import (
    UMLModel,
    backbone_state,
    build_unimodal,
    load_backbone_state,
    projection_state,
)


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(width=8, **kw)


def test_projection_and_backbone_keys_are_disjoint_and_cover_the_model():
    model = UMLModel({"s1": 2, "s2": 13}, 6, _cfg())
    params = {name for name, _ in model.named_parameters()}
    proj = {f"projections.{m}.{k}" for m in model.modalities for k, _ in model.projection(m).named_parameters()}
    bb = set(backbone_state(model))
    assert all(k.startswith("backbone.") for k in bb)
    assert proj.isdisjoint(bb)
    assert proj | bb == params


def test_backbone_keys_identical_for_2_and_13_band_modalities():
    a = UMLModel({"s1": 2}, 6, _cfg())
    b = UMLModel({"s2": 13}, 6, _cfg())
    sa, sb = backbone_state(a), backbone_state(b)
    assert list(sa) == list(sb)
    assert all(sa[k].shape == sb[k].shape for k in sa)


def test_default_split_is_stem_plus_two_blocks_private_six_shared():
    model = UMLModel({"s1": 2}, 6, _cfg())
    assert len(model.projection("s1").blocks) == 2
    assert len(model.backbone.blocks) == 6


@pytest.mark.parametrize("p", [0, 1, 4, 8])
def test_projection_depth_is_configurable_and_forward_works(p):
    model = UMLModel({"s1": 2, "s2": 12}, 5, _cfg(projection_blocks=p))
    assert len(model.projection("s2").blocks) == p
    assert len(model.backbone.blocks) == 8 - p
    out = model(torch.randn(3, 12, 16, 16), "s2")
    assert out.shape == (3, 5)


def test_large_stem_downsamples_by_four():
    model = UMLModel({"s2": 12}, 6, _cfg(stem="large"))
    z = model.projection("s2")(torch.randn(2, 12, 64, 64))
    assert z.shape[-1] == 16
    assert model(torch.randn(2, 12, 64, 64), "s2").shape == (2, 6)


def test_unimodal_baseline_is_whole_resnet18_private_with_same_budget():
    uml = UMLModel({"s1": 2}, 6, _cfg())
    uni = build_unimodal(2, "s1", 6, _cfg())
    assert len(uni.projection("s1").blocks) == 8 and len(uni.backbone.blocks) == 0
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(uni) == n(uml)


def test_static_bn_has_no_running_stats_and_tracked_bn_stats_stay_off_the_wire():
    static = UMLModel({"s1": 2}, 6, _cfg())
    assert not any("running_mean" in k for k in static.state_dict())
    tracked = UMLModel({"s1": 2}, 6, _cfg(track_running_stats=True))
    assert any("running_mean" in k for k in tracked.backbone.state_dict())
    assert not any("running" in k or "num_batches" in k for k in backbone_state(tracked))


def test_load_backbone_state_roundtrip_and_mismatch_error():
    a = UMLModel({"s1": 2}, 6, _cfg())
    b = UMLModel({"s2": 13}, 6, _cfg())
    load_backbone_state(b, backbone_state(a))
    assert all(torch.equal(backbone_state(a)[k], backbone_state(b)[k]) for k in backbone_state(a))
    bad = dict(backbone_state(a))
    bad["backbone.fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="fc.weight"):
        load_backbone_state(b, bad)


def test_projection_state_is_private_and_rejects_wrong_band_count():
    model = UMLModel({"s1": 2}, 6, _cfg())
    keys = {f"projections.s1.{k}" for k in projection_state(model, "s1")}
    assert keys and keys.isdisjoint(backbone_state(model))
    with pytest.raises(ValueError, match="expects N x 2 x H x W"):
        model(torch.randn(1, 3, 16, 16), "s1")
    with pytest.raises(KeyError, match="unknown modality 's3'"):
        model(torch.randn(1, 2, 16, 16), "s3")
