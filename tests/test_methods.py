"""The comparison baselines (uml_fed.methods): each loss on a hand-computed case, the adversarial signs,
a few training steps per method on the embedded data, determinism, selection by config, and one full
ISCA run whose saved checkpoint reproduces its reported accuracy.

Hand-computed values: /tmp/research/baselines.md (checked there against tllib, the official CDAN and
the ATM code); the rest are derived in the comments.
"""

import math

import pytest
import torch
from conftest import tiny_overrides

from uml_fed.config import ConfigError, MethodConfig, ModelConfig, load_config
from uml_fed.methods import METHODS, build_method
from uml_fed.methods.cdan import multilinear_map, randomized_map
from uml_fed.methods.common import entropy, grad_reverse, grl_coefficient, modality_loss
from uml_fed.methods.isca import Embedded, fit_maps, whitening_penalty
from uml_fed.methods.margin_disparity import margin_disparity, shift_log
from uml_fed.methods.mcc import mcc_loss
from uml_fed.methods.mdd import density_divergence, inter_domain, intra_class
from uml_fed.model import UMLModel

BASELINES = ["dann", "cdan", "mcc", "mdd", "margin_disparity", "isca_e2e"]  # losses on the one loop
ADVERSARIAL = ["dann", "cdan", "mdd", "margin_disparity", "isca_e2e"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention (30x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(num_classes: int = 3, shared_components: int = 0) -> UMLModel:
    cfg = ModelConfig(width=2, projection_blocks=8, shared_components=shared_components)
    return UMLModel({"a": 1, "b": 1}, num_classes, cfg)


def method_for(name: str, num_classes: int = 3, **coefficients):
    model = tiny_model(num_classes, shared_components=4 if name == "isca_e2e" else 0)
    return model, build_method(MethodConfig(name=name, **coefficients), model)


# --- shared pieces ---------------------------------------------------------------------------------


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x.detach())
    y.backward(torch.tensor([1.0, 10.0, 100.0]))
    assert torch.allclose(x.grad, torch.tensor([-0.5, -5.0, -50.0]))


def test_grl_schedule_is_danns_ramp():
    ramp = [grl_coefficient(p, 1.0, 10.0) for p in (0, 0.1, 0.25, 0.5, 1)]
    assert ramp == pytest.approx([0.0, 0.462117, 0.848284, 0.986614, 0.999909], abs=1e-6)
    assert grl_coefficient(1.0, 0.1, 10.0) == pytest.approx(0.0999909, abs=1e-7)  # MDD's ceiling


def logit_rows(p_first: list[float]) -> torch.Tensor:
    """Two-way discriminator scores whose softmax gives probability p of modality 0."""
    return torch.log(torch.tensor([[p, 1 - p] for p in p_first]))


def test_dann_loss_is_ln2_for_an_undecided_discriminator_and_matches_the_hand_value():
    assert modality_loss(torch.zeros(6, 2), [3, 3]).item() == pytest.approx(math.log(2))
    assert modality_loss(torch.zeros(6, 3), [2, 2, 2]).item() == pytest.approx(math.log(3))  # K-way
    # D(modality 0) = 0.8, D(modality 1) = 0.3: 0.5 (-ln 0.8 - ln 0.7)
    assert modality_loss(logit_rows([0.8, 0.3]), [1, 1]).item() == pytest.approx(0.289909, abs=1e-6)


# --- CDAN -----------------------------------------------------------------------------------------


def test_cdan_multilinear_and_randomized_maps():
    f, g = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.25, 0.75]])
    assert torch.allclose(multilinear_map(f, g), torch.tensor([[0.25, 0.5, 0.75, 0.75, 1.5, 2.25]]))
    r_f, r_g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    # f R_f = [4, 5], g R_g = [2.5, 3.5] -> [10, 17.5] / sqrt 2
    assert torch.allclose(randomized_map(f, g, r_f, r_g), torch.tensor([[7.071068, 12.374369]]))


def test_cdan_randomizes_above_4096_inputs():
    # width 2 -> 16 pooled features; 256 classes = 4096 inputs (multilinear), 257 = 4112 (randomized)
    _, plain = method_for("cdan", num_classes=256)
    _, randomized = method_for("cdan", num_classes=257)
    assert not plain.randomized and plain.discriminator[0].in_features == 4096
    assert randomized.randomized and randomized.discriminator[0].in_features == 1024
    assert "r_f" in dict(randomized.named_buffers())


def test_cdan_entropy_weighting_follows_the_official_normalisation():
    assert 1 + math.exp(-entropy(torch.tensor([[0.5, 0.5]])).item()) == pytest.approx(1.500010, abs=1e-6)
    scores = logit_rows([0.9, 0.6, 0.2, 0.4])  # D's probability of modality 0; rows 0-1 are modality 0
    g = torch.softmax(torch.tensor([[10.0, -10.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), dim=1)
    weights = 1 + torch.exp(-entropy(g))
    assert modality_loss(scores, [2, 2]).item() == pytest.approx(0.337539, abs=1e-6)  # plain CDAN
    assert modality_loss(scores, [2, 2], weights).item() == pytest.approx(0.323058, abs=1e-6)  # CDAN+E


# --- MCC ------------------------------------------------------------------------------------------


def test_mcc_is_zero_for_confident_one_hot_and_c_minus_1_over_c_for_uniform_predictions():
    assert mcc_loss(100 * torch.eye(3), 2.5).item() == pytest.approx(0.0, abs=1e-6)
    for classes in (2, 4):
        assert mcc_loss(torch.zeros(5, classes), 2.5).item() == pytest.approx((classes - 1) / classes)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mcc_loss(logits, 2.5).item() == pytest.approx(0.470988, abs=1e-6)
    assert mcc_loss(logits, 1.0).item() == pytest.approx(0.366888, abs=1e-6)


# --- MDD: maximum density divergence (Li et al. 2020) -------------------------------------------


def test_mdd_density_divergence_is_eq5_on_a_hand_case():
    f_s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    y_s = torch.tensor([0, 0, 1])
    f_t = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    y_t = torch.tensor([1, 1])
    # inter: index-aligned pairs (0,0): 2, (1,1): 0 + 9 = 9 -> mean 5.5
    assert inter_domain(f_s, f_t).item() == pytest.approx(5.5)
    # intra source: one same-label pair (0, 1): 1; intra target: one pair: 4
    assert intra_class(f_s, y_s).item() == pytest.approx(1.0)
    assert intra_class(f_t, y_t).item() == pytest.approx(4.0)
    assert density_divergence(f_s, y_s, f_t, y_t).item() == pytest.approx(10.5)
    assert intra_class(f_s, torch.tensor([0, 1, 2])).item() == 0.0  # no same-label pair


def test_mdd_total_is_cdan_with_entropy_conditioning_plus_alpha_times_the_divergence():
    torch.manual_seed(0)
    model, mdd = method_for("mdd", density_weight=0.5)
    assert mdd.entropy_conditioning
    batches = {m: (torch.randn(4, 1, 4, 4), torch.tensor([0, 0, 1, 2])) for m in ("a", "b")}
    out = mdd.loss(model, batches, 0.5)
    features = {m: model.features(batches[m][0], m) for m in ("a", "b")}
    cdan = mdd.objective(model, features, {m: batches[m][1] for m in ("a", "b")}, 0.5)
    density = density_divergence(features["a"], batches["a"][1], features["b"], batches["b"][1])
    assert out.total.item() == pytest.approx((cdan.total + 0.5 * density).item(), rel=1e-5)


# --- margin disparity discrepancy (Zhang et al. 2019) ---------------------------------------------


def test_margin_disparity_hand_values():
    assert shift_log(torch.tensor(0.0)).item() == pytest.approx(-13.815511, abs=1e-5)
    assert shift_log(torch.tensor(1.0)).item() == 0.0
    pred_s, pred_t = torch.tensor([0]), torch.tensor([1])  # argmax of f's logits [2, 0] and [0, 3]
    # -4 ln 2 + ln(0.5 + 1e-6)
    d = margin_disparity(torch.zeros(1, 2), pred_s, torch.zeros(1, 2), pred_t, 4.0)
    assert d.item() == pytest.approx(-3.465734, abs=1e-6)
    # the adversary agrees with f on the target: the disparity drops to -12.750396
    d = margin_disparity(torch.zeros(1, 2), pred_s, torch.tensor([[0.0, 10.0]]), pred_t, 4.0)
    assert d.item() == pytest.approx(-12.750396, abs=1e-5)


def test_margin_disparity_uses_one_adversary_per_ordered_modality_pair():
    _, method = method_for("margin_disparity")
    assert method.pairs == [("a", "b"), ("b", "a")] and len(method.adversaries) == 2


# --- ISCA -----------------------------------------------------------------------------------------


def test_isca_covariance_penalty_is_zero_for_whitened_components():
    white = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert whitening_penalty(white).item() == pytest.approx(0.0, abs=1e-7)
    assert whitening_penalty(white + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # centred first
    # covariance diag(1, 0): ||diag(0, -1)||_F / 2
    assert whitening_penalty(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(0.5)


def test_isca_linear_map_in_the_model_equals_q_on_the_pooled_embedding():
    model = tiny_model(shared_components=4)
    x = torch.randn(5, 1, 8, 8)
    proj = model.projection("a")
    pooled = proj.blocks(proj.stem(x)).mean(dim=(2, 3))
    q = proj.map.weight[:, :, 0, 0]
    assert q.shape == (4, 16)
    assert torch.allclose(model.features(x, "a"), pooled @ q.T, atol=1e-6)
    assert model.backbone.fc.in_features == 4


# --- adversarial signs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_method_modules_descend_and_features_ascend_the_alignment_term(name):
    """One SGD step on the alignment term: the discriminator / adversaries lower it, the features (behind
    the gradient reversal) raise it -- the minimax game, in one optimizer step.  Float64: ISCA's deep
    discriminator starts nearly constant, so the first-order changes are tiny."""
    torch.manual_seed(0)
    model, method = method_for(name, isca_whiten_weight=0.0)
    model, method = model.double(), method.double()
    dim = model.backbone.fc.in_features
    features = {m: torch.randn(8, dim, dtype=torch.float64, requires_grad=True) for m in ("a", "b")}
    logits = {m: model.backbone.head(f).detach() for m, f in features.items()}

    def value(feats):
        with torch.no_grad():
            return method.alignment(feats, logits, 1.0).item()

    before = value(features)
    method.alignment(features, logits, 1.0).backward()
    with torch.no_grad():
        moved = {m: f - 0.05 * f.grad for m, f in features.items()}
        ascended = value(moved)
        for p in method.parameters():
            p -= 0.05 * p.grad
        descended = value(features)
    assert ascended > before > descended, (name, before, ascended, descended)


# --- training on the embedded data ----------------------------------------------------------------


def train_epochs(name: str, epochs: int = 3) -> list[float]:
    from uml_fed.data import load_institutions
    from uml_fed.train import (
        BatchStream,
        make_optimizer,
        seed_everything,
        seeded_generator,
        split_tensors,
        train_one_epoch,
    )

    cfg = load_config(tiny_overrides(f"method={name}", "data.train_per_class=16"))
    institutions = load_institutions(cfg)
    seed_everything(cfg.seed)
    model = UMLModel({i.name: i.in_channels for i in institutions}, len(institutions[0].classes), cfg.model)
    method = build_method(cfg.method, model)
    optimizer = make_optimizer(torch.nn.ModuleList([model, method]), cfg.train.lr, cfg.train.weight_decay)
    streams = {
        i.name: BatchStream(*split_tensors(i, "train"), cfg.train.batch_size, seeded_generator(cfg.seed, i.name))
        for i in institutions
    }
    return [
        train_one_epoch(model, streams, optimizer, method=method, progress=(e / epochs, (e + 1) / epochs))["loss"]
        for e in range(epochs)
    ]


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_lowers_its_training_loss_and_is_deterministic(name):
    losses = train_epochs(name)
    assert losses[-1] < losses[0] - 0.1, losses
    assert train_epochs(name) == losses  # same seed, same numbers


# --- configuration --------------------------------------------------------------------------------


def test_unknown_method_names_are_refused():
    with pytest.raises(ConfigError, match=r"method\.name='dnn'.*choose one of"):
        build_method(MethodConfig(name="dnn"), tiny_model())
    assert set(METHODS) == {"uml", *BASELINES}
    with pytest.raises(ConfigError, match=r"method\.name=isca is the authors' ISCA"):
        build_method(MethodConfig(name="isca"), tiny_model(shared_components=4))


def test_baselines_need_separate_encoders_and_isca_its_linear_maps():
    model = UMLModel({"a": 1, "b": 1}, 3, ModelConfig(width=2, projection_blocks=2))
    with pytest.raises(ConfigError, match=r"model\.projection_blocks=8"):
        build_method(MethodConfig(name="dann"), model)
    with pytest.raises(ConfigError, match=r"model\.shared_components"):
        build_method(MethodConfig(name="isca_e2e"), tiny_model())
    one = UMLModel({"a": 1}, 3, ModelConfig(width=2, projection_blocks=8))
    with pytest.raises(ConfigError, match=r"data\.modalities"):
        build_method(MethodConfig(name="mcc"), one)


@pytest.mark.parametrize(
    "override, key",
    [
        ("method.mcc_temperature=0", "method.mcc_temperature"),
        ("method.align_weight=-1", "method.align_weight"),
        ("method.disc_hidden=0", "method.disc_hidden"),
        ("model.shared_components=4", "model.shared_components"),  # with projection_blocks=2
    ],
)
def test_invalid_coefficients_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


def test_federated_runs_refuse_a_baseline():
    from uml_fed.federated.runtime import server_config

    with pytest.raises(ConfigError, match=r"method\.name=dann: .*centralized"):
        server_config({"overrides": "method=dann"})


def test_method_files_set_separate_encoders():
    for name in [*BASELINES, "isca"]:
        cfg = load_config([f"method={name}", "model.width=8"])
        assert cfg.method.name == name and cfg.model.projection_blocks == 8
    for name in ("isca", "isca_e2e"):
        assert load_config([f"method={name}", "model.width=8"]).model.shared_components == 8
    assert load_config(["method=margin_disparity"]).method.grl_max == 0.1
    assert load_config(["method=mdd"]).method.density_weight == 0.01
    isca = load_config(["method=isca"]).method
    assert (isca.isca_cls_weight, isca.isca_mcc_weight, isca.isca_map_lr, isca.isca_disc_lr) == (0.1, 0.1, 2e-4, 2e-5)


def test_table4_and_table3_arms():
    from uml_fed.experiments.definitions import EXPERIMENTS

    cfg = load_config([])
    table4 = EXPERIMENTS["table4"].arms(cfg, "cpu")
    assert [a.series for a in table4] == ["unimodal", "dann", "cdan", "mcc", "mdd", "uml"]
    assert all(a.overrides == (f"method={a.series}",) for a in table4[1:-1])
    assert ("isca", "uml", ("method=isca",)) in [
        (a.series, a.method, a.overrides) for a in EXPERIMENTS["table3"].arms(cfg, "cpu")
    ]
    for e in EXPERIMENTS.values():  # each federated arm is compared with the unimodal arm, not trained twice
        arms = e.arms(cfg, "cpu")
        federated = [a for a in arms if a.method == "federated"]
        assert all("fed.local_baseline=false" in a.overrides for a in federated), e.name
        assert not federated or any(a.method == "unimodal" for a in arms), e.name


# --- one full run ---------------------------------------------------------------------------------


def test_isca_freezes_the_unimodal_encoders_and_its_checkpoint_reproduces_the_accuracy(tmp_path):
    """The authors' ISCA: the encoders are exactly the unimodal baselines (same seed, batches, selection),
    untouched by the maps; the saved model (encoder, centre, Q, classifier) gives the reported accuracy."""
    from uml_fed.centralized import run_centralized
    from uml_fed.data import load_institutions
    from uml_fed.results import load_checkpoint

    overrides = tiny_overrides("method=isca", "train.epochs=2", "train.select_after=0", "method.isca_iterations=40")
    cfg = load_config(overrides, output_dir=str(tmp_path))
    results = run_centralized(cfg, unimodal=True)
    assert results["method"] == "isca"
    for inst in load_institutions(cfg):
        entry = results["modalities"][inst.name]
        assert entry["isca"]["reported"] == "running_stats" and entry["isca"]["selected_iteration"] % 10 == 0
        assert entry["isca"]["steps_per_epoch"] == entry["unimodal"]["steps_per_epoch"]
        model, meta = load_checkpoint(tmp_path / "checkpoints" / f"isca_{inst.name}.pt")
        assert meta["model_cfg"]["shared_components"] == 8
        unimodal, _ = load_checkpoint(tmp_path / "checkpoints" / f"unimodal_{inst.name}.pt")
        assert isinstance(unimodal.projection.map, torch.nn.Identity)  # the baseline never uses a method
        frozen = unimodal.projection.state_dict()
        assert all(torch.equal(v, model.projection.state_dict()[k]) for k, v in frozen.items())
        assert model.projection.center.abs().sum() > 0  # centred with the training mean
        x, y = torch.from_numpy(inst.split("test").images), torch.from_numpy(inst.split("test").labels)
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        assert acc == pytest.approx(entry["isca"]["test_acc"], abs=1e-6)


def test_isca_maps_are_fitted_on_two_modalities_only_and_deterministically():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 3, (64,), generator=g)
    data = {m: Embedded((x + i, y), (x[:16] + i, y[:16])) for i, m in enumerate(("a", "b"))}
    cfg = MethodConfig(name="isca", isca_iterations=30, isca_epochs=3)
    first = fit_maps(data, 3, 4, cfg, torch.Generator().manual_seed(1))
    again = fit_maps(data, 3, 4, cfg, torch.Generator().manual_seed(1))
    assert all(torch.equal(first[m].q, again[m].q) and first[m].iteration == again[m].iteration for m in data)
    assert first["a"].q.shape == (4, 16) and torch.allclose(first["b"].center, x.mean(0) + 1)
    with pytest.raises(ConfigError, match="exactly two modalities"):
        fit_maps({**data, "c": data["a"]}, 3, 4, cfg, g)
