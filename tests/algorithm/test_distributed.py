"""Two gloo processes, each with half the batch, against one process on the whole batch.

The loss sees the global batch only if NT-Xent gathers every worker's views with gradients and
BN statistics are synchronised on both routes; the test fails if either is missing.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from acl_ray.algorithm.models import build_encoder
from acl_ray.algorithm.models.sync_bn import AllReduceBatchNorm, convert_sync_bn
from acl_ray.algorithm.objective import acl_loss
from acl_ray.config.pretrain import Config

N = 16  # global batch


VARIANTS = ["ds", "simclr", "a2s", "ds_air"]
AIR = {"loss.air_weight": 0.5, "loss.sir_weight": 0.5, "loss.adv_weight": 0.7}  # "ds_air": AIR's terms


def make(variant: str) -> tuple[Config, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    extra = AIR if variant == "ds_air" else {}
    cfg = Config().override(
        {"model.variant": variant.removesuffix("_air"), "attack.random_start": False, "attack.steps": 2}
        | extra
    )
    torch.manual_seed(0)
    model = build_encoder(cfg.model, 1, (0.5,), (0.5,))
    g = torch.Generator().manual_seed(1)
    x1 = torch.rand(N, 1, 8, 8, generator=g)
    x2 = (x1 + 0.05 * torch.randn(N, 1, 8, 8, generator=g)).clamp(0, 1)
    x0 = (x1 + 0.05 * torch.randn(N, 1, 8, 8, generator=g)).clamp(0, 1)
    return cfg, model, x1, x2, x0


def step(model: nn.Module, wrapped: nn.Module, x1, x2, x0, cfg: Config, gather: bool):
    model.train()
    loss = acl_loss(wrapped, model, x1, x2, cfg, gather=gather, x0=x0)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    stats = [b.detach().clone() for n, b in model.named_buffers() if "running" in n]
    return loss.detach(), grads, stats


def worker(rank: int, world: int, port: int, out: str) -> None:
    """Every variant in one process group, one after another: the processes and gloo start once."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for variant in VARIANTS:
        cfg, model, x1, x2, x0 = make(variant)
        model = convert_sync_bn(model, torch.device("cpu"))
        ddp = DDP(model)
        n = N // world
        sl = slice(rank * n, (rank + 1) * n)
        loss, grads, stats = step(model, ddp, x1[sl], x2[sl], x0[sl], cfg, gather=True)
        dist.all_reduce(loss)
        results[variant] = {"loss": loss / world, "grads": grads, "stats": stats}
    if rank == 0:
        torch.save(results, out)
    dist.barrier()  # no rank tears gloo down while another still uses it (a SIGABRT was seen in CI)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """What rank 0 of two gloo workers got for each variant (two spawned processes in all)."""
    out = str(tmp_path_factory.mktemp("dist") / "dist.pt")
    mp.start_processes(worker, args=(2, free_port(), out), nprocs=2, join=True, start_method="spawn")
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_gloo_workers_match_one_process(variant: str, two_workers) -> None:
    got = two_workers[variant]
    cfg, model, x1, x2, x0 = make(variant)
    loss, grads, stats = step(model, model, x1, x2, x0, cfg, gather=False)
    torch.testing.assert_close(got["loss"], loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(got["grads"], grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(got["stats"], stats, strict=True):  # running statistics of both routes
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_all_reduce_bn_equals_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(5)
    ours = AllReduceBatchNorm(5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 5, 3, 3)
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)
