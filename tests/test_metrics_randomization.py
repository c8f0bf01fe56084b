"""Tests of gradsal.metrics.randomization: cascading parameter randomisation (chapter 05, Sanity Checks; Adebayo et al., 2018)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from toy_models import TinyEfficientNet, trained_like

from gradsal.metrics import randomization as rnd
from gradsal.models import efficientnet_stages

pytestmark = pytest.mark.usefixtures("one_thread")


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_randomization_changes_only_the_intended_layers() -> None:
    model = nn.Sequential(nn.Identity(), trained_like(TinyEfficientNet()))
    before = state_copy(model)
    stages = efficientnet_stages(model)
    randomised: set[str] = set()
    n_steps = 0
    for (label, names), (got_label, copy_) in zip(
        stages, rnd.cascading_randomization(model, stages, generator=0)
    ):
        n_steps += 1
        assert got_label == label and copy_ is not model
        randomised |= {n + "." for n in names}
        for key, value in copy_.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            if any(key.startswith(prefix) for prefix in randomised):
                assert not torch.equal(value, before[key]), (
                    f"{key} should have been re-initialised at {label}"
                )
            else:
                assert torch.equal(value, before[key]), (
                    f"{key} changed at {label} but is not in a randomised stage"
                )
    assert n_steps == len(stages)
    # the caller's model is untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_randomization_copies_are_independent_and_seeded() -> None:
    model = trained_like(TinyEfficientNet())
    first = list(rnd.cascading_randomization(model, generator=3))
    again = list(rnd.cascading_randomization(model, generator=3))
    other = list(rnd.cascading_randomization(model, generator=4))
    w_fc = [m._fc.weight.clone() for _, m in first]
    # later steps do not change what earlier copies hold
    assert all(torch.equal(w_fc[0], w) for w in w_fc)
    assert torch.equal(
        first[-1][1]._conv_stem.weight, again[-1][1]._conv_stem.weight
    )
    assert not torch.equal(
        first[-1][1]._conv_stem.weight, other[-1][1]._conv_stem.weight
    )
    # flags are copied as they were
    assert not first[0][1].training


def test_reinitialize_values() -> None:
    torch.manual_seed(0)
    bn = trained_like(nn.Sequential(nn.BatchNorm2d(3)))[0]
    rnd.reinitialize_(bn)
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(
        bn.bias, torch.zeros(3)
    )
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(
        bn.running_var, torch.ones(3)
    )
    conv = nn.Conv2d(64, 128, 3)
    rnd.reinitialize_(conv, 0)
    fan_in = 64 * 9
    assert (
        abs(float(conv.weight.detach().std()) - (2 / fan_in) ** 0.5)
        < 0.05 * (2 / fan_in) ** 0.5
    )
    assert torch.equal(conv.bias, torch.zeros(128))
    with pytest.raises(TypeError):
        rnd.reinitialize_("conv")  # type: ignore[arg-type]


def test_randomization_rejects_bad_stages() -> None:
    model = TinyEfficientNet()
    with pytest.raises(ValueError, match="no submodule"):
        rnd.cascading_randomization(model, [("x", ["_nope"])])
    with pytest.raises(ValueError, match="no parameters"):
        rnd.cascading_randomization(
            nn.Sequential(nn.ReLU()), [("relu", ["0"])]
        )
    with pytest.raises(ValueError, match="non-empty"):
        rnd.cascading_randomization(model, [])
    with pytest.raises(ValueError, match="pair"):
        rnd.cascading_randomization(model, ["_fc"])
    with pytest.raises(TypeError):
        rnd.cascading_randomization("model", None)  # type: ignore[arg-type]


def test_randomization_similarity_known_values() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, generator=gen)
    sims = rnd.randomization_similarity(a, -a)
    assert sims["spearman"] == pytest.approx(-1.0)
    assert sims["spearman_abs"] == pytest.approx(1.0) and sims[
        "ssim"
    ] == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# what re-initialisation does to each kind of parameter


class Gain(nn.Module):
    """A module with a 1-D parameter that is not a bias and no reset_parameters()."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((3,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def test_reinitialize_resets_normalisation_layers_biases_and_other_parameters() -> (
    None
):
    # Only biases become 0: a LayerNorm or GroupNorm scale of 0 would cut the network,
    # and a PReLU slope of 0 would turn it into a ReLU.
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.PReLU(4),
        nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        nn.LayerNorm([4, 4]),
        nn.Flatten(),
        nn.LayerNorm(64),
        nn.Linear(64, 2),
    )
    trained_like(model)
    with torch.no_grad():
        model[3].running_mean.fill_(0.7)
        model[3].running_var.fill_(3.0)
    rnd.reinitialize_(model, 0)
    for norm in (model[1], model[3], model[4], model[6]):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)), type(
            norm
        ).__name__
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias)), type(
            norm
        ).__name__
    assert torch.equal(model[3].running_mean, torch.zeros(4)) and torch.equal(
        model[3].running_var, torch.ones(4)
    )
    assert torch.equal(
        model[2].weight, torch.full((4,), 0.25)
    )  # PReLU's own initial slope
    assert torch.equal(model[0].bias, torch.zeros(4)) and torch.equal(
        model[7].bias, torch.zeros(2)
    )
    fan_in = 64
    assert (
        abs(float(model[7].weight.detach().std()) - (2 / fan_in) ** 0.5)
        < 0.5 * (2 / fan_in) ** 0.5
    )


def test_reinitialize_is_seeded_and_leaves_the_global_generator_alone() -> (
    None
):
    model = trained_like(
        nn.Sequential(
            nn.Linear(5, 5), nn.PReLU(5), nn.LayerNorm(5), nn.Linear(5, 2)
        )
    )
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    rnd.reinitialize_(a, 3)
    rnd.reinitialize_(b, 3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values())
    )


def test_reinitialize_warns_about_a_parameter_it_cannot_reset() -> None:
    gain = Gain()
    with pytest.warns(UserWarning, match="no reset_parameters"):
        rnd.reinitialize_(gain)
    assert torch.equal(gain.gain, torch.full((3,), 2.0))


def test_lite0_has_only_parameters_whose_reinitialisation_did_not_change(
    lite0,
) -> None:
    # Chapter 05's numbers stay as they were: in EfficientNet-Lite0 every parameter with
    # fewer than two axes is a bias or belongs to a batch norm, which the rule before
    # normalisation layers were told apart already treated as now.
    for module in lite0.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.ndim < 2:
                assert name == "bias" or isinstance(module, nn.BatchNorm2d), (
                    type(module).__name__,
                    name,
                )
