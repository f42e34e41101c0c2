"""Losses as pure functions of logits or projections (solo-learn's ``solo/losses``).

* :func:`nt_xent`: SimCLR's NT-Xent (Chen et al. 2020, Eq. 1), vectorised, optionally over all
  workers' negatives: the ACL pre-training loss.
* :func:`invariance_regularisers`: AIR's standard and adversarial invariant regularisers (Xu et al.
  2023), KL terms between the two views' distributions over the batch, anchored on the un-augmented images.
* :func:`trades_loss`: TRADES (Zhang et al. 2019, Eq. 5), the adversarial full finetuning (AFF) loss.
* :func:`semisup_loss`: TRADES with distillation from a teacher's soft labels (ACL Sec. 4.4).

The attacks that produce the adversarial inputs live in :mod:`acl_ray.algorithm.attacks`.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _gather_with_grad(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``z`` from every rank with gradients flowing back to each rank's slice.

    Returns the concatenation over ranks and this rank's row offset into it. Outside a process
    group it is the identity. ``torch.distributed.nn.all_gather`` backpropagates the summed
    gradient of every rank's copy to its owner, which is what makes the loss equal to the
    single-process loss on the global batch once DDP averages gradients (see tests).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z, 0
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private module; still the public one
        warnings.filterwarnings("ignore", category=FutureWarning)
        parts = all_gather(z)  # world_size x (n, d), differentiable
    return torch.cat(parts, dim=0), dist.get_rank() * z.shape[0]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool = False) -> torch.Tensor:
    """Normalised temperature-scaled cross-entropy between two views.

    Row i of ``z1`` and row i of ``z2`` are a positive pair; every other view in the (global)
    batch is a negative. The loss is the mean over all 2N anchors.

    With ``gather=True`` inside a process group, anchors are this rank's 2n views and the
    candidates are all 2N views of all ranks; the value returned is this rank's mean, and the
    mean over ranks (what DDP's gradient averaging optimises) equals the global-batch loss
    when every rank holds the same n.

    Shape:
        z1, z2: (n, d) -> scalar
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)  # (2n, d), local anchors [view1; view2]
    if gather:
        z1_all, off = _gather_with_grad(F.normalize(z1.float(), dim=1))
        z2_all, _ = _gather_with_grad(F.normalize(z2.float(), dim=1))
    else:
        z1_all, z2_all, off = z[:n], z[n:], 0
    big_n = z1_all.shape[0]
    cand = torch.cat([z1_all, z2_all], dim=0)  # (2N, d), all views of the global batch
    logits = z @ cand.T / temperature  # (2n, 2N)
    rows = torch.arange(n, device=z.device)
    self_cols = torch.cat([rows + off, rows + off + big_n])  # (2n,) column of each anchor itself
    pos_cols = torch.cat([rows + off + big_n, rows + off])  # (2n,) column of its positive
    logits = logits.masked_fill(
        F.one_hot(self_cols, 2 * big_n).bool(), float("-inf")
    )  # (2n, 2N), an anchor is never its own negative
    return F.cross_entropy(logits, pos_cols)


def _batch_log_dist(logits: torch.Tensor, gather: bool) -> torch.Tensor:
    """Log-softmax over the (global) batch of one logit per image. Shape: (n,) -> (N,)."""
    if gather:
        logits, _ = _gather_with_grad(logits)
    return F.log_softmax(logits, dim=0)


def _pair_logits(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarity of row k of ``a`` with row k of ``b`` over ``temperature``: (n, d) -> (n,)."""
    return (F.normalize(a.float(), dim=1) * F.normalize(b.float(), dim=1)).sum(dim=1) / temperature


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum p (log p - log q)`` of two distributions given as log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum()


def invariance_regularisers(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z1_adv: torch.Tensor,
    z2_adv: torch.Tensor,
    z0: torch.Tensor,
    temperature: float,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AIR's regularisers ``(SIR, AIR)`` (Xu et al. NeurIPS 2023) on projections of one batch.

    Each view ``v`` of image ``k`` gives a distribution over the images of the batch, anchored on the
    un-augmented image ``z0``: ``p_v(k) = softmax_k(sim(z_v[k], z0[k]) / t)``. SIR is ``KL(p_2 || p_1)``.
    For the adversarial views, AIR's product of the adversarial-to-original and adversarial-to-clean-view
    distributions, ``softmax_k(sim(z_v_adv[k], z0[k]) / t) * softmax_k(sim(z_v_adv[k], z_v[k]) / t)``, is
    renormalised over the batch (which is the softmax of the summed logits) and AIR is ``KL(P_2 || P_1)``.
    Both are true KL divergences: >= 0, and 0 when the two views (and their attacks) coincide. The
    official ``AIR.py`` passes probabilities where ``F.kl_div`` expects log-probabilities, and its
    product is not renormalised, so its values differ from these and are not 0 for identical views.
    With ``gather``, the batch is every worker's images (the single-process value on the global batch).

    Shape:
        z1, z2, z1_adv, z2_adv, z0: (n, d) -> two scalars
    """
    t = temperature
    p1 = _batch_log_dist(_pair_logits(z1, z0, t), gather)  # (N,)
    p2 = _batch_log_dist(_pair_logits(z2, z0, t), gather)
    q1 = _batch_log_dist(_pair_logits(z1_adv, z0, t) + _pair_logits(z1_adv, z1, t), gather)
    q2 = _batch_log_dist(_pair_logits(z2_adv, z0, t) + _pair_logits(z2_adv, z2, t), gather)
    return _kl(p2, p1), _kl(q2, q1)


def trades_kl(logits_adv: torch.Tensor, p_nat: torch.Tensor) -> torch.Tensor:
    """Summed ``KL(p_nat || softmax(logits_adv))``, ``nn.KLDivLoss(reduction='sum')``. Shape: (N, K) -> ()."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_nat, reduction="sum")


def trades_loss(
    logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0
) -> torch.Tensor:
    """``CE(f(x), y) + beta / N * sum KL(p(x) || p(x_adv))`` (TRADES eq. 5, the official ``trades.py``).

    Shape:
        logits_nat, logits_adv: (N, K), y: (N,) -> scalar
    """
    ce = F.cross_entropy(logits_nat, y)
    kl = trades_kl(logits_adv, F.softmax(logits_nat, dim=1))  # () summed over the batch
    return ce + beta * kl / len(logits_nat)


def semisup_loss(
    logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor,
    alpha: float = 0.5, temperature: float = 1.0, beta: float = 6.0,
) -> torch.Tensor:
    """Official ``trade_loss_soft``: CE + distillation on adversarial rows + TRADES KL, batch mean.

    Labelled rows (the first ``len(y)``): ``(1 - alpha) CE + alpha T^2 KD``; unlabelled rows: ``T^2 KD``
    (official ``rate_distill`` 1, no alpha); all rows: ``beta KL(p(x) || p(x_adv))``. KD is KL(softmax(t
    / T) || softmax(s / T)): the official soft cross-entropy less the teacher's entropy (same gradients).

    Shape:
        logits_nat, logits_adv, teacher_logits: (B, K); y: (L,) with L <= B -> scalar
    """
    b, n_lab, t = len(logits_adv), len(y), temperature
    ce = F.cross_entropy(logits_adv[:n_lab], y, reduction="sum")
    kd = F.kl_div(  # (B,) per-row KL to the soft teacher
        F.log_softmax(logits_adv / t, dim=1), F.softmax(teacher_logits / t, dim=1), reduction="none"
    ).sum(1)
    weight = torch.ones_like(kd)  # (B,) unlabelled rows: rate_distill = 1
    weight[:n_lab] = alpha
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="sum")
    return ((1 - alpha) * ce + t * t * (weight * kd).sum() + beta * robust) / b
