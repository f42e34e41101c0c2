"""NT-Xent (SimCLR, Chen et al. 2020, Eq. 1), vectorised, optionally over all workers' negatives."""

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
