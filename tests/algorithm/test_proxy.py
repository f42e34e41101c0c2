import pytest
import torch

from acl_ray.algorithm.data import Datasets, load_datasets
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.proxy import proxy_eval
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import ProxyConfig

SYN = {"data.name": "synthetic", "data.synthetic_size": 200, "data.batch_size": 32, "run.progress": False}
FAST = ProxyConfig(train_size=100, val_size=40, epochs=3, steps=2)


@pytest.fixture(scope="module")
def trained() -> tuple[Pretrainer, Datasets]:
    """A one-epoch ACL-DS pre-training mid-sweep: the proxy sees its live encoder."""
    torch.set_num_threads(1)
    cfg = Config().override({**SYN, "run.epochs": 1})
    data = load_datasets(cfg.data)
    t = Pretrainer(cfg, data, torch.device("cpu"))
    t.train_epoch()
    return t, data


def without_time(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if k != "time/proxy_s"}


def test_proxy_leaves_the_live_encoder_as_it_found_it(trained) -> None:
    trainer, data = trained
    enc = trainer.encoder
    enc.head.train(False)  # a mixed mode that must come back exactly
    head, modes = enc.head, [m.training for m in enc.modules()]
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    grads = [p.grad for p in enc.parameters()]
    m = proxy_eval(enc, data, FAST)
    assert enc.head is head and [mod.training for mod in enc.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in enc.state_dict().items())
    assert all(p.grad is g for p, g in zip(enc.parameters(), grads, strict=True))
    assert 0 <= m["proxy/robust_acc"] <= m["proxy/standard_acc"] <= 1
    enc.head.train(True)
    trainer.train_epoch()  # the encoder still trains: the proxy took nothing from it


def test_proxy_is_reproducible_under_its_seed(trained) -> None:
    trainer, data = trained
    a, b = (without_time(proxy_eval(trainer.encoder, data, FAST, seed=1)) for _ in range(2))
    assert a == b
