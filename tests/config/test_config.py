from pathlib import Path

import pytest
import yaml

import acl_ray.config.pretrain as config_module
import acl_ray.config.protocols as protocols
import acl_ray.config.sweep as sweep_module
from acl_ray.config.fields import keys, parse_set
from acl_ray.config.pretrain import Config, load_config
from acl_ray.config.protocols import FinetuneConfig, ProxyConfig, SemisupConfig
from acl_ray.config.sweep import SweepConfig


def test_defaults_are_the_digits_setting() -> None:
    c = Config()
    assert (c.data.name, c.model.variant, c.attack.eps, c.attack.steps) == ("digits", "ds", 0.1, 3)
    assert c.attack.step_size == pytest.approx(0.025)
    assert (c.loss.temperature, c.data.batch_size, c.optim.name, c.run.epochs) == (0.5, 128, "adam", 40)


def test_round_trip_through_yaml(tmp_path) -> None:
    c = Config().override({"attack.eps": 0.05, "model.variant": "a2s", "run.seed": 3})
    c.to_yaml(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c


def test_set_overrides_are_typed() -> None:
    c = load_config(
        None, ["attack.steps=5", "attack.eps=8/255".replace("8/255", "0.0313"), "run.progress=false"]
    )
    assert c.attack.steps == 5 and isinstance(c.attack.steps, int)
    assert c.attack.eps == pytest.approx(0.0313) and c.run.progress is False


@pytest.mark.parametrize(
    ("module", "cls"),
    [(config_module, Config), (protocols, FinetuneConfig), (protocols, SemisupConfig),
     (protocols, ProxyConfig), (sweep_module, SweepConfig)],
)
def test_every_field_has_a_key_and_a_comment(module, cls) -> None:
    found = keys(cls)
    if cls is Config:
        assert "attack.eps" in found and "data.batch_size" in found and "loss.temperature" in found
    src = Path(module.__file__).read_text()
    for key in found:
        name = key.split(".")[-1]
        line = next(ln for ln in src.splitlines() if ln.strip().startswith(f"{name}:"))
        assert "#" in line, f"field {key} has no comment"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"finetune.epochs": "7"}, ("epochs", 7)),
        ({"eval.eps": 0.05}, ("eval.eps", 0.05)),
        ({"finetune.eval.steps": 3.0}, ("eval.steps", 3)),
        ({"eval.losses": "cw"}, ("eval.losses", ("cw",))),
    ],
)
def test_one_typed_override_reaches_nested_sections(values, expected) -> None:
    cfg = FinetuneConfig().override(values)
    path, want = expected
    got = cfg
    for part in path.split("."):
        got = getattr(got, part)
    assert got == want and type(got) is type(want)
    assert FinetuneConfig.from_dict(cfg.to_dict()) == cfg  # the dict round trip keeps every value


@pytest.mark.parametrize(
    ("cls", "key"),
    [(Config, "attack.nope"), (Config, "attack"), (FinetuneConfig, "finetune.eval"),
     (FinetuneConfig, "eval.nope"), (SweepConfig, "sweep.nope"), (ProxyConfig, "train_size.x")],
)
def test_unknown_keys_are_one_line_errors(cls, key) -> None:
    with pytest.raises(ValueError, match=f"Unknown config key '{key}'") as e:
        cls().override({key: 1})
    assert "\n" not in str(e.value)


def test_config_file_that_is_not_yaml_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("attack: {eps: [0.1\n")
    with pytest.raises(ValueError, match=r"is not valid YAML \(line") as e:
        load_config(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"data.name": "mnist"}, "data.name"),
        ({"attack.eps": -0.1}, "attack.eps"),
        ({"attack.eps": 0}, "attack.eps"),
        ({"attack.steps": 0}, "attack.steps"),
        ({"attack.steps": 2.5}, "attack.steps"),
        ({"loss.temperature": 0}, "loss.temperature"),
        ({"loss.temperature": -1}, "loss.temperature"),
        ({"data.batch_size": 0}, "data.batch_size"),
        ({"data.batch_size": -4}, "data.batch_size"),
        ({"model.variant": "acl"}, "model.variant"),
        ({"optim.name": "rmsprop"}, "optim.name"),
        ({"attack.foo": 1}, "attack.foo"),
        ({"nosection.x": 1}, "nosection.x"),
        ({"run.progress": "maybe"}, "run.progress"),
        ({"augment.schedule": "cosine"}, "augment.schedule='cosine': must be one of constant, dynacl"),
        ({"augment.step_epochs": -1}, "augment.step_epochs"),
        ({"loss.adv_weight_schedule": "linear"}, "loss.adv_weight_schedule"),
        ({"loss.adv_weight_ramp": 1.5}, "loss.adv_weight_ramp"),
        ({"loss.air_weight": -0.5}, "loss.air_weight"),
        ({"loss.sir_weight": -0.5}, "loss.sir_weight"),
        ({"model.variant": "a2a", "loss.air_weight": 0.5}, "air_weight=0.5: must be 0 unless model.var"),
        ({"model.variant": "simclr", "loss.sir_weight": 0.5}, "loss.sir_weight"),
        ({"model.variant": "a2s", "loss.adv_weight_schedule": "dynacl"}, "must be constant unless model.var"),
    ],
)
def test_bad_values_name_the_field(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        Config().override(override)
    assert "\n" not in str(err.value)


def test_unknown_key_lists_what_the_section_has() -> None:
    with pytest.raises(ValueError, match="attack.eps, attack.alpha"):
        Config().override({"attack.epsilon": 0.1})


def test_bad_set_syntax_and_bad_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="section.field=value"):
        parse_set(["attack.eps"])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ValueError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"attack": {"epz": 0.1}}))
    with pytest.raises(ValueError, match="attack.epz"):
        load_config(tmp_path / "typo.yaml")


def test_paper_cifar_preset_loads() -> None:
    c = load_config("configs/paper_cifar10.yaml")
    assert (c.data.name, c.model.arch, c.optim.name, c.optim.lr, c.data.batch_size) == (
        "cifar10",
        "resnet18",
        "lars",
        5.0,
        512,
    )
    assert c.attack.eps == pytest.approx(8 / 255) and c.attack.steps == 5 and c.run.epochs == 1000


def test_a_preset_applies_first_then_the_other_keys() -> None:
    from acl_ray.config.protocols import PRESETS
    from acl_ray.config.sweep import Sweep

    c = FinetuneConfig().override({"finetune.epochs": 3, "finetune.preset": "acl-aff"})
    assert (c.protocol, c.lr, c.batch_size, c.milestones, c.epochs) == ("aff", 0.1, 128, (15, 20), 3)
    assert (c.eval.eps, c.eval.alpha, c.eval.attack, c.preset) == (8 / 255, 2 / 255, "autoattack", "acl-aff")
    assert FinetuneConfig.from_dict(c.to_dict()) == c  # a saved config.yaml reloads to the same values
    for name, values in PRESETS.items():
        p = FinetuneConfig.from_preset(name)
        for key, want in values.items():
            got = getattr(p.eval, key[5:]) if key.startswith("eval.") else getattr(p, key)
            assert got == want, (name, key)
    final = Sweep.from_dict({"final": {"preset": "robustssl-slf", "epochs": 2}}).final
    assert (final.protocol, final.lr, final.epochs, final.milestones) == ("slf", 0.01, 2, (10, 20))
    with pytest.raises(ValueError, match="Illegal finetune.preset='acl'"):
        FinetuneConfig().override({"preset": "acl"})


def test_every_dataset_has_a_threat_model() -> None:
    from acl_ray.config.pretrain import DATASETS
    from acl_ray.config.protocols import THREAT_MODELS

    assert set(THREAT_MODELS) == set(DATASETS)


@pytest.mark.parametrize("cls", [FinetuneConfig, SemisupConfig])
def test_threat_model_of_the_data_then_preset_then_set(cls) -> None:
    key = f"{cls.prefix}.threat_model"
    digits = cls().override({key: "digits"})
    assert digits.threat_model == "digits" and digits.eval == cls().eval  # digits: exactly today's values
    assert digits.eval.eps == 0.1 and digits.eval.step_size == 0.025
    for name in ("cifar10", "cifar100"):
        c = cls().override({key: name})
        assert (c.threat_model, c.eval.eps, c.eval.step_size, c.eval.steps) == (name, 8 / 255, 2 / 255, 20)
        assert cls.from_dict(c.to_dict()) == c  # config.yaml reloads to the same values
    chosen = cls().override({key: "cifar10", "eval.eps": 0.05})  # an explicit eps wins, step eps/4
    assert (chosen.eval.eps, chosen.eval.step_size, chosen.threat_model) == (0.05, 0.0125, "cifar10")
    assert cls().override({key: "cifar10", "threat_model": "digits"}).eval.eps == 0.1  # the last one given
    with pytest.raises(ValueError, match=f"Illegal {key}='mnist': must be one of digits"):
        cls().override({key: "mnist"})


def test_preset_wins_over_the_threat_model_in_any_key_order() -> None:
    first, second = {"preset": "digits"}, {"threat_model": "cifar10"}
    for values in ({**first, **second}, {**second, **first}):
        c = FinetuneConfig().override(values)
        assert (c.eval.eps, c.eval.alpha, c.preset, c.threat_model) == (0.1, 0.0, "digits", "cifar10")
    c = FinetuneConfig().override({"threat_model": "digits", "preset": "robustssl-alf"})
    assert (c.eval.eps, c.eval.alpha) == (8 / 255, 2 / 255)


@pytest.mark.parametrize("protocol", ["alf", "aff"])
def test_cifar_training_attack_follows_the_threat_model(protocol) -> None:
    c = FinetuneConfig().override({"threat_model": "cifar10", "protocol": protocol}).resolved()
    assert c.train_eps == 8 / 255 and c.train_eps / 4 == 2 / 255  # PGD-10 / TRADES step train_eps / 4
    c = FinetuneConfig().override({"threat_model": "cifar10", "protocol": protocol, "eval.eps": 4 / 255})
    assert c.resolved().train_eps == 4 / 255


@pytest.mark.parametrize(
    ("saved", "dataset", "eps", "steps"),
    [
        ({}, "cifar10", 8 / 255, 20),  # saved before the record: the digits default on CIFAR
        ({"eval.steps": 2}, "cifar100", 8 / 255, 2),  # values chosen then are kept
        ({}, "digits", 0.1, 20),
        ({"eval.eps": 0.05}, "cifar10", 0.05, 20),  # a chosen eps is kept
        ({"threat_model": "cifar10", "eval.eps": 0.1}, "cifar10", 0.1, 20),  # recorded: 0.1 was chosen
        ({"preset": "digits"}, "cifar10", 0.1, 20),
    ],
)
def test_follow_data_fixes_only_unrecorded_defaults(saved, dataset, eps, steps) -> None:
    c = FinetuneConfig().override(saved).follow_data(dataset)
    assert (c.eval.eps, c.eval.steps) == (eps, steps)
    assert c.eval.step_size == eps / 4
