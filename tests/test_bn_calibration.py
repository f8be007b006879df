import copy

import torch
from torch import nn

from uml_fed.bn_calibration import bn_layers, calibrate_bn
from uml_fed.config import ModelConfig
from uml_fed.model import UMLModel


def _model():
    torch.manual_seed(0)
    return UMLModel({"s2": 4}, 3, ModelConfig(width=8)).modality_model("s2")


def _bn_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Independently capture every BN layer's input in a train-mode forward pass."""
    captured, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            hooks.append(
                m.register_forward_hook(lambda mod, inp, out, n=name: captured.__setitem__(n, inp[0].detach()))
            )
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return captured


def test_calibration_gives_exact_mean_and_var_of_each_bn_input_and_keeps_weights():
    model = _model()
    x = torch.randn(40, 4, 8, 8) * 3 + 1
    before = copy.deepcopy(model.state_dict())
    cal = calibrate_bn(model, x, epochs=3, batch_size=64)  # one batch = the whole set
    inputs = _bn_inputs(copy.deepcopy(model), x)
    for name, m in cal.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            z = inputs[name]
            mean = z.mean(dim=(0, 2, 3))
            var = z.var(dim=(0, 2, 3), unbiased=True)  # BN stores the unbiased estimate
            torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)
            assert m.momentum is None and m.track_running_stats
    for k, v in cal.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad for p in cal.parameters())
    # the original model is untouched: still static BN, trainable
    assert all(b.running_mean is None for b in bn_layers(model))
    assert all(p.requires_grad for p in model.parameters())


def test_calibration_is_a_cumulative_average_over_batches():
    model = _model()
    x = torch.randn(32, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    cal = calibrate_bn(model, x, epochs=1, batch_size=16, generator=g)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    first = _bn_inputs(copy.deepcopy(model), x[order[:16]])
    second = _bn_inputs(copy.deepcopy(model), x[order[16:]])
    for name, m in cal.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            expected = (first[name].mean(dim=(0, 2, 3)) + second[name].mean(dim=(0, 2, 3))) / 2
            torch.testing.assert_close(m.running_mean, expected, rtol=1e-4, atol=1e-5)
            assert int(m.num_batches_tracked) == 2


def test_calibrated_model_is_deterministic_in_eval_mode():
    model = _model()
    x = torch.randn(20, 4, 8, 8)
    cal = calibrate_bn(model, x, epochs=1, batch_size=64)
    assert not cal.training
    torch.testing.assert_close(cal(x[:5]), cal(x)[:5])  # eval output no longer depends on the batch


def test_a_single_full_batch_gives_the_same_statistics_for_any_number_of_epochs():
    model = _model()
    x = torch.randn(30, 4, 8, 8)
    one = calibrate_bn(model, x, epochs=1, batch_size=64)
    ten = calibrate_bn(model, x, epochs=10, batch_size=64)
    for a, b in zip(bn_layers(one), bn_layers(ten)):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
