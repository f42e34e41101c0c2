"""cluster.yaml passes Ray's own offline preparation + schema, and broken copies of it fail."""

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
AWS = ROOT / "cluster.yaml"
_spec = importlib.util.spec_from_file_location("cluster_validate", ROOT / "cluster" / "validate.py")
assert _spec is not None and _spec.loader is not None
cv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cv)


def _raw() -> dict[str, Any]:
    return yaml.safe_load(AWS.read_text())


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_cluster_yaml_is_valid_offline() -> None:
    cfg = cv.validate(AWS)
    types, head = cfg["available_node_types"], cfg["head_node_type"]
    assert types[head]["resources"]["TRAIN_DRIVER"] >= 1 and types[head]["max_workers"] == 0
    workers = {n: t for n, t in types.items() if n != head}
    assert {t["node_config"]["InstanceType"] for t in workers.values()} == {"g5.xlarge"}
    markets = [t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") for t in workers.values()]
    assert sorted(map(str, markets)) == ["None", "spot"]  # one on-demand type and its spot variant
    for t in workers.values():
        assert "IamInstanceProfile" in t["node_config"]  # workers write checkpoints to S3 themselves
        assert "--gpus all" in t["docker"]["worker_run_options"]
    assert sum(t["min_workers"] for t in types.values()) <= cfg["max_workers"]
    # prepare_config merged the common setup into both lists: the project, pinned, everywhere
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("-c /home/ray/acl_ray/constraints.txt -e /home/ray/acl_ray" in c for c in cfg[key])
    assert cfg["file_mounts"] == {"/home/ray/acl_ray": "."}


def test_images_match_the_pinned_ray() -> None:
    docker = _raw()["docker"]
    pinned = next(
        line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.startswith("ray==")
    )
    assert pinned == ray.__version__
    assert docker["head_image"] == f"rayproject/ray:{pinned}-py311-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{pinned}-py311-gpu"
    per_type = [t.get("docker", {}).get("worker_image") for t in _raw()["available_node_types"].values()]
    assert per_type == [None] * len(per_type)  # no node type swaps in another image


def test_placeholders_are_listed_and_strict_mode_fails_on_them() -> None:
    left = list(cv.placeholders(cv.validate(AWS)))
    assert "available_node_types.gpu_worker.node_config.ImageId" in left
    assert "available_node_types.gpu_worker_spot.node_config.IamInstanceProfile.Arn" in left
    run = [sys.executable, str(ROOT / "cluster" / "validate.py"), str(AWS)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert subprocess.run([*run, "--strict"], capture_output=True).returncode == 1


def test_cli_exits_1_with_the_reason_on_an_invalid_file(tmp_path: Path) -> None:
    cfg = copy.deepcopy(_raw())
    _float_resource(cfg)
    run = [sys.executable, str(ROOT / "cluster" / "validate.py"), str(_write(tmp_path, cfg))]
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "available_node_types.head_cpu.resources.TRAIN_DRIVER" in proc.stderr


def _drop_resources(c: dict[str, Any]) -> None:
    del c["available_node_types"]["gpu_worker"]["resources"]


def _float_resource(c: dict[str, Any]) -> None:
    c["available_node_types"]["head_cpu"]["resources"]["TRAIN_DRIVER"] = 0.5


def _top_level_typo(c: dict[str, Any]) -> None:
    c["setup_command"] = c.pop("setup_commands")


def _docker_typo(c: dict[str, Any]) -> None:
    c["docker"]["imag"] = c["docker"]["worker_image"]


def _too_many_min_workers(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu_worker"]["min_workers"] = 4
    c["available_node_types"]["gpu_worker_spot"]["min_workers"] = 9  # 13 > max_workers 12


def _bad_head_type(c: dict[str, Any]) -> None:
    c["head_node_type"] = "head_gpu"


def _no_driver_resource(c: dict[str, Any]) -> None:
    c["available_node_types"]["head_cpu"]["resources"] = {}


def _no_gpus_flag(c: dict[str, Any]) -> None:
    del c["available_node_types"]["gpu_worker_spot"]["docker"]


def _min_above_max(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu_worker"]["min_workers"] = 5  # its max_workers is 4


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop_resources, "'resources' is a required property"),
        (_float_resource, "0.5 is not of type 'integer'"),
        (_top_level_typo, "'setup_command' was unexpected"),
        (_docker_typo, "'imag' was unexpected"),
        (_too_many_min_workers, "smaller than the sum of `min_workers`"),
        (_bad_head_type, "`head_node_type` must be one of"),
        (_no_driver_resource, "TRAIN_DRIVER"),
        (_no_gpus_flag, "--gpus all"),
        (_min_above_max, "min_workers=5 > max_workers=4"),
    ],
)
def test_broken_copies_fail(tmp_path: Path, mutate: Any, message: str) -> None:
    cfg = copy.deepcopy(_raw())
    mutate(cfg)
    with pytest.raises(cv.ClusterConfigError, match=re.escape(message)):
        cv.validate(_write(tmp_path, cfg))


def test_the_unmutated_copy_passes(tmp_path: Path) -> None:
    """The round trip through yaml.safe_dump is not what makes the broken copies fail."""
    assert cv.validate(_write(tmp_path, _raw()))["cluster_name"] == "acl-ray"
