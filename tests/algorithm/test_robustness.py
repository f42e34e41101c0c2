import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.robustness import (
    accuracy,
    autoattack_accuracy,
    masking_checks,
    robust_accuracy,
    robust_mask,
    zero_gradient_fraction,
)
from acl_ray.config.pretrain import DataConfig
from acl_ray.config.protocols import LOSSES, EvalConfig


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = load_datasets(DataConfig())
    return (
        d.train.images.float() / 255, d.train.labels, d.test.images[:200].float() / 255, d.test.labels[:200]
    )


@pytest.fixture(scope="module")
def clean_model(digits) -> nn.Module:
    """An undefended MLP trained on clean digits for a few epochs (test accuracy ~0.95)."""
    torch.set_num_threads(1)
    x, y = digits[0], digits[1]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(10):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return m.eval()


class Quantised(nn.Module):
    """Masked on purpose: the input is rounded to 8 levels, so every input gradient is exactly zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 8) / 8)


class Saturated(nn.Module):
    """Masked on purpose: logits scaled by 1e4, so the softmax saturates and CE gradients vanish."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1e4


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"eps": 0.0}, "eval.eps"),
        ({"eps": 1.5}, "eval.eps"),
        ({"eps": -0.1}, "eval.eps"),
        ({"steps": 0}, "eval.steps"),
        ({"restarts": 0}, "eval.restarts"),
        ({"losses": ("ce", "dlr")}, "eval.losses"),
        ({"losses": ()}, "eval.losses"),
        ({"attack": "fgsm"}, "eval.attack"),
        ({"aa_version": "plus"}, "eval.aa_version"),
    ],
)
def test_bad_eval_config_is_one_line_error(kw, field) -> None:
    with pytest.raises(ValueError, match=field) as e:
        EvalConfig(**kw)
    assert "\n" not in str(e.value)


def test_eval_config_defaults_and_losses_from_a_string() -> None:
    c = EvalConfig()
    assert (c.eps, c.steps, c.restarts, c.losses, c.attack) == (0.1, 20, 1, ("ce", "cw"), "pgd")
    assert c.step_size == pytest.approx(0.025)
    assert EvalConfig(losses="cw, ce").losses == ("cw", "ce")  # type: ignore[arg-type]


def test_undefended_classifier_falls_under_pgd(clean_model, digits) -> None:
    _, _, x, y = digits
    sa = accuracy(clean_model, x, y)
    assert sa > 0.9
    # Digits are 8x8: a clean model keeps ~0.4 at eps 0.1 (measured, AutoAttack agrees), ~0 at 0.2.
    assert robust_accuracy(clean_model, x, y, EvalConfig(eps=0.1)) < sa - 0.3
    assert robust_accuracy(clean_model, x, y, EvalConfig(eps=0.2)) < 0.05


def test_worst_case_over_losses_and_restarts(clean_model, digits) -> None:
    _, _, x, y = digits
    cfg = EvalConfig(eps=0.05, steps=10)
    ce, cw = (robust_mask(clean_model, x, y, EvalConfig(eps=0.05, steps=10, losses=(s,))) for s in LOSSES)
    both = robust_mask(clean_model, x, y, cfg)
    assert torch.equal(both, ce & cw)  # a point is robust only if it survives every loss
    assert robust_accuracy(clean_model, x, y, cfg) <= min(ce.float().mean().item(), cw.float().mean().item())
    more = robust_mask(clean_model, x, y, EvalConfig(eps=0.05, steps=10, restarts=3))
    assert not (more & ~both).any()  # restarts can only remove points
    assert robust_accuracy(clean_model, x, y, cfg) <= accuracy(clean_model, x, y)


class Counting(nn.Module):
    """Records the number of points of every forward pass that builds a graph (the attack's steps)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.rows.append(len(x))
        return self.inner(x)


def test_a_later_loss_attacks_only_the_points_the_earlier_ones_left(clean_model, digits) -> None:
    _, _, x, y = digits
    counting = Counting(clean_model)
    ce_only = robust_mask(clean_model, x, y, EvalConfig(eps=0.05, steps=10, losses=("ce",)))
    correct = int((clean_model(x).argmax(1) == y).sum())
    assert correct > ce_only.sum() > 0  # CE breaks some points, not all
    both = robust_mask(counting, x, y, EvalConfig(eps=0.05, steps=10))
    # CE: every clean-correct point, 10 steps; CW: only CE's survivors (one batch each: the same sums)
    assert sum(counting.rows) == 10 * (correct + int(ce_only.sum()))
    assert not (both & ~ce_only).any()


def test_evaluation_leaves_the_model_as_it_was(clean_model, digits) -> None:
    _, _, x, y = digits
    clean_model.train()
    before = [p.detach().clone() for p in clean_model.parameters()]
    robust_accuracy(clean_model, x[:20], y[:20], EvalConfig(steps=2))
    assert clean_model.training
    assert all(torch.equal(a, b) for a, b in zip(before, clean_model.parameters(), strict=True))
    assert all(p.grad is None for p in clean_model.parameters())
    clean_model.eval()


def test_a_normal_model_raises_no_masking_warning(clean_model, digits) -> None:
    _, _, x, y = digits
    assert zero_gradient_fraction(clean_model, x, y, "ce") == 0
    assert masking_checks(clean_model, x[:100], y[:100], EvalConfig(steps=10)) == []


def test_quantised_model_triggers_zero_gradient_warnings(clean_model, digits) -> None:
    _, _, x, y = digits
    masked = Quantised(clean_model)
    cfg = EvalConfig(steps=10)
    # The masked model looks far more robust than the model it wraps...
    assert robust_accuracy(masked, x, y, cfg) > robust_accuracy(clean_model, x, y, cfg) + 0.3
    warnings = masking_checks(masked, x[:100], y[:100], cfg)
    assert len(warnings) == 2 and all("zero input gradient" in w for w in warnings)  # ce and cw


def test_saturated_logits_trigger_a_ce_warning(clean_model, digits) -> None:
    _, _, x, y = digits
    masked = Saturated(clean_model)
    assert zero_gradient_fraction(masked, x, y, "ce") > 0.5
    assert zero_gradient_fraction(masked, x, y, "cw") == 0  # why CW is in the default losses
    warnings = masking_checks(masked, x[:100], y[:100], EvalConfig(steps=10))
    assert len(warnings) == 1 and "ce loss" in warnings[0]


def test_unconverged_pgd_and_autoattack_gaps_warn(clean_model, digits) -> None:
    _, _, x, y = digits
    cfg = EvalConfig(steps=10)
    warnings = masking_checks(clean_model, x[:50], y[:50], cfg, pgd_acc=0.9)  # as if PGD had failed
    assert len(warnings) == 2 and "steps" in warnings[0] and "restarts" in warnings[1]
    pgd = robust_accuracy(clean_model, x[:50], y[:50], cfg)
    warnings = masking_checks(clean_model, x[:50], y[:50], cfg, pgd_acc=pgd, aa_acc=pgd - 0.2)
    assert len(warnings) == 1 and "AutoAttack" in warnings[0]


def test_autoattack_agrees_with_pgd(clean_model, digits) -> None:
    pytest.importorskip("pyautoattack")
    _, _, x, y = digits
    x, y = x[:100], y[:100]
    pgd = robust_accuracy(clean_model, x, y, EvalConfig())
    notes: list[str] = []
    aa = autoattack_accuracy(clean_model, x, y, 0.1, 10, seed=0, version="fast", warnings=notes)
    assert aa <= pgd + 0.01 and abs(aa - pgd) <= 0.05
    assert notes == []
    assert clean_model.training is False


def test_autoattack_flags_a_quantised_model(clean_model, digits) -> None:
    pytest.importorskip("pyautoattack")
    _, _, x, y = digits
    notes: list[str] = []
    autoattack_accuracy(Quantised(clean_model), x[:30], y[:30], 0.1, 10, seed=0, warnings=notes)
    assert any("zero gradient" in n for n in notes)


def test_missing_pyautoattack_is_a_one_line_error(clean_model, digits, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import now raises ImportError
    _, _, x, y = digits
    with pytest.raises(ValueError, match=r"pip install 'acl-ray\[autoattack\]'") as e:
        autoattack_accuracy(clean_model, x[:5], y[:5], 0.1, 10)
    assert "\n" not in str(e.value)


def test_autoattack_rejects_bad_eps(clean_model, digits) -> None:
    _, _, x, y = digits
    with pytest.raises(ValueError, match="eval.eps"):
        autoattack_accuracy(clean_model, x[:5], y[:5], 1.5, 10)


class Constant(nn.Module):
    """Built to be wrong or right on purpose: always predicts ``cls`` (its logits do not depend on x)."""

    def __init__(self, cls: int, k: int = 10) -> None:
        super().__init__()
        self.bias = nn.Parameter(F.one_hot(torch.tensor(cls), k).float() * 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)  # (N, K)


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("batch", [1, 3, 1000])  # 1000: larger than the split
def test_degenerate_classifiers_never_crash(n, batch) -> None:
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n))
    y = torch.full((n,), 3)  # a single class
    cfg = EvalConfig(eps=0.1, steps=2, batch_size=batch, restarts=2)
    wrong, right = Constant(5), Constant(3)
    assert accuracy(wrong, x, y, batch) == 0.0 and robust_accuracy(wrong, x, y, cfg) == 0.0
    assert robust_mask(wrong, x, y, cfg).tolist() == [False] * n
    # Logits that ignore x: every attack fails, every point stays robust.
    assert accuracy(right, x, y, batch) == 1.0 and robust_accuracy(right, x, y, cfg) == 1.0
    assert masking_checks(wrong, x, y, cfg) == [w for w in masking_checks(wrong, x, y, cfg) if "zero" in w]


def test_empty_split_is_a_clear_error() -> None:
    x, y = torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="0 images"):
        accuracy(Constant(0), x, y)


def test_autoattack_on_degenerate_classifiers() -> None:
    pytest.importorskip("pyautoattack")
    x, y = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.full((3,), 3)
    assert autoattack_accuracy(Constant(5), x, y, 0.1, 10) == 0.0  # no clean-correct point to attack
    assert autoattack_accuracy(Constant(3), x[:1], y[:1], 0.1, 10, batch_size=1000) == 1.0
