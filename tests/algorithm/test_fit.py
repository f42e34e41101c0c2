import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acl_ray.algorithm.fit import fit
from acl_ray.config.pretrain import OptimConfig

SGD = OptimConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0)


class Scalar(nn.Module):
    """One parameter ``w``; the loss ``w`` has gradient 1, so plain SGD moves ``w`` by exactly ``-lr``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))


def run(model: Scalar, scores: list[float], select_every: int = 1, steps: int = 2) -> dict[str, float]:
    """Fit for ``len(scores)`` epochs; the k-th scoring returns ``scores[k]``."""
    it = iter(scores)
    return fit(
        model, model.parameters(), SGD, epochs=len(scores), steps_per_epoch=steps,
        batches=lambda: range(steps), step_loss=lambda _: model.w * 1.0, score=lambda: {"val/acc": next(it)},
        select_every=select_every,
    )


def test_the_best_scoring_state_is_kept_not_the_last() -> None:
    model = Scalar()
    seen: list[float] = []
    it = iter([0.2, 0.9, 0.5, 0.1])

    def score() -> dict[str, float]:
        seen.append(model.w.item())  # the state scored at each epoch
        return {"val/acc": next(it)}

    best = fit(model, model.parameters(), SGD, epochs=4, steps_per_epoch=1, batches=lambda: range(1),
               step_loss=lambda _: model.w * 1.0, score=score)
    assert best == {"val/acc": 0.9, "select/epoch": 2}
    assert model.w.item() == seen[1] != seen[-1]  # epoch 2's weights were reloaded


def test_ties_keep_the_earlier_state_and_the_rank_orders_the_keys() -> None:
    assert run(Scalar(), [0.5, 0.5, 0.5])["select/epoch"] == 1
    model = Scalar()
    values = iter([{"sa": 0.9, "ra": 0.1}, {"sa": 0.2, "ra": 0.3}, {"sa": 0.8, "ra": 0.3}])
    best = fit(model, model.parameters(), SGD, epochs=3, steps_per_epoch=1, batches=lambda: range(1),
               step_loss=lambda _: model.w * 1.0, score=lambda: next(values), rank=("ra", "sa"))
    assert best == {"sa": 0.8, "ra": 0.3, "select/epoch": 3}  # robust first, then standard breaks the tie


@pytest.mark.parametrize(
    ("epochs", "every", "scored"), [(7, 3, [3, 6, 7]), (4, 1, [1, 2, 3, 4]), (2, 5, [2])]
)
def test_scoring_runs_every_select_every_epochs_and_at_the_last(epochs, every, scored) -> None:
    model, epochs_seen, calls = Scalar(), [], []

    def batches() -> range:
        calls.append(len(calls) + 1)  # called once at the start of each epoch
        return range(2)

    def score() -> dict[str, float]:
        epochs_seen.append(len(calls))
        return {"val/acc": float(len(calls))}

    best = fit(model, model.parameters(), SGD, epochs=epochs, steps_per_epoch=2, batches=batches,
               step_loss=lambda _: model.w * 1.0, score=score, select_every=every)
    assert epochs_seen == scored and len(calls) == epochs and best["select/epoch"] == scored[-1]


def test_the_learning_rate_follows_a_per_step_cosine_to_zero() -> None:
    model, w = Scalar(), []
    epochs, steps = 3, 4

    def step_loss(_: int) -> torch.Tensor:
        w.append(model.w.item())
        return model.w * 1.0

    fit(model, model.parameters(), SGD, epochs=epochs, steps_per_epoch=steps, batches=lambda: range(steps),
        step_loss=step_loss, score=lambda: {"val/acc": 0.0}, select_every=epochs)
    w.append(model.w.item())
    total = epochs * steps
    lrs = [w[t] - w[t + 1] for t in range(total)]  # the SGD step of the loss w is exactly lr_t
    expected = [0.1 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_model_trains_in_train_mode_even_after_an_eval_mode_score() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    modes: list[bool] = []

    def step_loss(_: int) -> torch.Tensor:
        modes.append(model.training)
        return model(torch.randn(4, 3)).square().mean()

    def score() -> dict[str, float]:
        model.eval()
        return {"val/acc": 0.0}

    fit(model, model.parameters(), SGD, epochs=2, steps_per_epoch=1, batches=lambda: range(1),
        step_loss=step_loss, score=score)
    assert modes == [True, True]


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fit_equals_the_hand_written_loop_it_replaces(name) -> None:
    """The finetuning loop as it was written before fit existed: same optimiser, schedule and draws."""
    torch.manual_seed(0)
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    model = nn.Linear(6, 3)
    ref = copy.deepcopy(model)
    cfg = OptimConfig(name=name, lr=0.05, momentum=0.9, weight_decay=2e-4)
    epochs, batch = 3, 16
    steps = (len(y) + batch - 1) // batch

    opt: torch.optim.Optimizer = (
        torch.optim.Adam(ref.parameters(), cfg.lr, weight_decay=cfg.weight_decay) if name == "adam"
        else torch.optim.SGD(ref.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = F.cross_entropy(ref(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    gen = torch.Generator().manual_seed(1)
    fit(model, model.parameters(), cfg, epochs=epochs, steps_per_epoch=steps,
        batches=lambda: torch.randperm(len(y), generator=gen).split(batch),
        step_loss=lambda idx: F.cross_entropy(model(x[idx]), y[idx]), score=lambda: {"val/acc": 0.0},
        select_every=epochs)
    for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_step_schedule_drops_the_lr_tenfold_after_each_milestone() -> None:
    """SGD on loss = w: each step moves w by exactly the current lr, so the steps read the schedule."""
    model = nn.Linear(1, 1, bias=False)
    w = model.weight
    seen: list[float] = []

    def step_loss(_: int) -> torch.Tensor:
        seen.append(float(w.detach()))
        return w.sum()

    optim = OptimConfig(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0)
    fit(model, [w], optim, epochs=4, steps_per_epoch=2, batches=lambda: range(2), step_loss=step_loss,
        score=lambda: {"s": 0.0}, lr_schedule="step", milestones=(1, 3))
    moves = [a - b for a, b in itertools.pairwise(seen)]
    assert moves == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.1, 0.01])  # epoch 1, epochs 2-3, epoch 4
