import copy
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from acl_ray.algorithm.attacks import AttackSpec
from acl_ray.algorithm.checkpoint import load_checkpoint
from acl_ray.algorithm.classifier import load_classifier
from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.finetune import aff_loss, finetune, finetune_state, random_checkpoint
from acl_ray.algorithm.pretrain import run_pretrain
from acl_ray.algorithm.robustness import evaluate_checkpoint
from acl_ray.cli import main
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import EvalConfig, FinetuneConfig

TINY = {"data.name": "synthetic", "data.batch_size": 64, "run.epochs": 1, "run.threads": 1}
TINY["run.progress"] = False
FAST = {"finetune.epochs": 3, "finetune.train_steps": 2, "finetune.val_size": 40, "eval.steps": 3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    """One-epoch ACL-DS and SimCLR pre-trainings on synthetic data (a few seconds)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pretrain")
    out = {}
    for variant in ("ds", "simclr"):
        run_pretrain(Config().override({**TINY, "model.variant": variant}), root / variant)
        out[variant] = str(root / variant)
    return out


def fast(protocol: str, **more: object) -> FinetuneConfig:
    epochs = {"finetune.epochs": {"slf": 20, "alf": 10, "aff": 3}[protocol]}  # SLF steps are cheap
    return FinetuneConfig(protocol=protocol, threads=1).override({**FAST, **epochs, **more})


@pytest.mark.parametrize("protocol", ["slf", "alf", "aff"])
def test_each_protocol_writes_metrics_checkpoint_and_config(runs, tmp_path, protocol) -> None:
    m = finetune(runs["ds"], fast(protocol), tmp_path / "ft")
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved == pytest.approx(m)
    assert (m["protocol"], m["route"]) == (protocol, "adv")
    for split in ("val", "eval"):
        assert 0 <= m[f"{split}/robust_acc"] <= m[f"{split}/standard_acc"] <= 1
    assert m["eval/standard_acc"] > 0.3  # synthetic classes are easy: something was learnt
    assert m["time/finetune_s"] > 0
    cfg = FinetuneConfig.from_dict(yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text()))
    assert cfg == fast(protocol).resolved() and cfg.epochs == {"slf": 20, "alf": 10, "aff": 3}[protocol]
    _, ft_cfg, _ = load_classifier(tmp_path / "ft")  # weights_only=True inside
    assert ft_cfg == cfg
    again = evaluate_checkpoint(tmp_path / "ft", checks=0)
    assert again["eval/standard_acc"] == pytest.approx(m["eval/standard_acc"])
    assert again["eval/robust_acc"] == pytest.approx(m["eval/robust_acc"])


@pytest.mark.parametrize("protocol", ["slf", "alf"])
def test_linear_protocols_keep_the_encoder_frozen(runs, tmp_path, protocol) -> None:
    finetune(runs["ds"], fast(protocol), tmp_path / "ft")
    pre = load_checkpoint(runs["ds"])["model"]
    post = load_checkpoint(tmp_path / "ft")["model"]
    for k, v in post.items():
        if k.startswith("encoder."):
            assert torch.equal(v, pre[k[len("encoder.") :]]), k  # weights and BN statistics


def test_aff_changes_the_encoder(runs, tmp_path) -> None:
    finetune(runs["ds"], fast("aff"), tmp_path / "ft")
    pre, post = load_checkpoint(runs["ds"])["model"], load_checkpoint(tmp_path / "ft")["model"]
    assert not torch.equal(post["encoder.backbone.body.0.weight"], pre["backbone.body.0.weight"])


def test_route_defaults_and_errors(runs, tmp_path) -> None:
    assert finetune(runs["simclr"], fast("slf"), tmp_path / "a")["route"] == "clean"
    clean = fast("slf", **{"finetune.route": "clean"})
    assert finetune(runs["ds"], clean, tmp_path / "b")["route"] == "clean"
    with pytest.raises(ValueError, match=r"finetune.route='adv'.*only the routes: clean") as e:
        finetune(runs["simclr"], fast("slf", **{"finetune.route": "adv"}), tmp_path / "c")
    assert "\n" not in str(e.value) and not (tmp_path / "c").exists()


def test_random_encoder_baseline(tmp_path) -> None:
    ckpt = random_checkpoint(Config().override(TINY), tmp_path / "random")
    m = finetune(ckpt, fast("slf"), tmp_path / "ft")
    assert m["route"] == "adv" and 0 <= m["eval/robust_acc"] <= m["eval/standard_acc"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"finetune.protocol": "linear"}, "finetune.protocol"),
        ({"finetune.route": "pgd"}, "finetune.route"),
        ({"finetune.optimizer": "lars"}, "finetune.optimizer"),
        ({"eval.eps": 1.5}, "eval.eps"),
        ({"finetune.eval.eps": -0.1}, "eval.eps"),
        ({"eval.attack": "cw"}, "eval.attack"),
        ({"finetune.epochs": "many"}, "finetune.epochs"),
        ({"finetune.nope": 1}, "finetune.nope"),
        ({"train.epochs": 1}, "train.epochs"),
    ],
)
def test_bad_finetune_config_is_one_line_error(values, field) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as e:
        FinetuneConfig().override(values)
    assert "\n" not in str(e.value)


def test_overrides_are_typed_and_protocol_defaults_resolve() -> None:
    values = {"eval.losses": "cw", "eval.eps": "0.05", "finetune.epochs": "3"}
    c = FinetuneConfig(protocol="aff").override(values)
    assert c.eval == EvalConfig(eps=0.05, losses=("cw",)) and c.epochs == 3
    r = c.resolved()
    assert (r.optimizer, r.lr, r.train_eps) == ("sgd", 0.05, 0.05)
    assert FinetuneConfig().resolved().epochs == 40


def test_cli_finetune_then_evaluate(runs, tmp_path, capsys) -> None:
    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")] + ["--set", "finetune.threads=1"]
    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", runs["ds"], "--protocol", "slf", "--out", str(out), *sets]) == 0
    assert json.loads((out / "metrics.json").read_text())["protocol"] == "slf"
    assert main(["evaluate", "--checkpoint", str(out), "--eps", "0.05", "--checks", "20"]) == 0
    m = json.loads((out / "evaluate_pgd" / "metrics.json").read_text())
    assert m["eval/eps"] == 0.05 and m["eval/robust_acc"] <= m["eval/standard_acc"]
    assert isinstance(m["eval/warnings"], list)


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--protocol", "xlf"],
        ["finetune", "--protocol", "slf", "--route", "adv", "--use-simclr"],
        ["finetune", "--protocol", "slf", "--set", "eval.eps=2"],
        ["evaluate-ds", "--attack", "fgsm"],
        ["evaluate-ds", "--eps", "1.5"],
        ["evaluate-ds", "--eps", "-0.1"],
        ["evaluate-pretrained"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(runs, tmp_path, capsys, args) -> None:
    if args[0] == "finetune":
        ckpt = runs["simclr"] if "--use-simclr" in args else runs["ds"]
        args = [a for a in args if a != "--use-simclr"] + ["--checkpoint", ckpt, "--out", str(tmp_path / "o")]
    else:
        ft = tmp_path / "ft"
        if args[0] == "evaluate-ds":
            finetune(runs["ds"], fast("slf"), ft)
        args = ["evaluate", "--checkpoint", str(ft if args[0] == "evaluate-ds" else runs["ds"]), *args[1:]]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().out.strip()
    assert err.startswith("error:") and "\n" not in err, err


def test_aff_loss_is_trades_on_its_own_attack() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    model.train()
    spec = AttackSpec(0.1, 0.025, 3)
    loss = aff_loss(model, x, y, spec, beta=6.0)
    assert loss > F.cross_entropy(model(x), y) - 1e-3 and loss.requires_grad and model.training
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert aff_loss(model, x, y, spec, beta=0.0).item() == pytest.approx(
        F.cross_entropy(model(x), y).item(), rel=0.2
    )
    a, b = (  # fresh copies: a train-mode forward moves the BN statistics the attack reads
        aff_loss(copy.deepcopy(model), x, y, spec, 6.0, torch.Generator().manual_seed(5)) for _ in range(2)
    )
    assert torch.equal(a, b)


def test_finetune_state_is_the_finetune_protocol(runs, tmp_path) -> None:
    """The sweep trials' evaluation and ``acl-ray finetune`` run the same code to the same numbers."""
    cfg = fast("slf")
    on_disk = finetune(runs["ds"], cfg, tmp_path / "ft")
    state = load_checkpoint(runs["ds"])
    data = load_datasets(Config.from_dict(state["config"]).data)
    in_memory = finetune_state(state, data, cfg, torch.device("cpu"))
    for key in ("val/standard_acc", "val/robust_acc", "select/epoch", "eval/standard_acc", "eval/robust_acc"):
        assert in_memory[key] == on_disk[key], key
    assert (in_memory["eval/protocol"], in_memory["eval/attack"]) == ("slf", on_disk["eval/attack"])
