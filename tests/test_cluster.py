"""cluster.yaml passes Ray's own offline preparation + schema, and broken copies of it fail."""

import copy
import importlib.util
import json
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
    assert cfg["file_mounts"] == {"/home/ray/acl_ray": ".", "/home/ray/.ray/auth_token": "~/.ray/auth_token"}


def test_cluster_yaml_is_secured() -> None:
    """Token auth on every `ray start`, the dashboard on loopback, the project's group on every node."""
    cfg = cv.validate(AWS)
    starts = list(cv.ray_starts(cfg))
    assert [where for where, _, _ in starts] == ["head_start_ray_commands[1]", "worker_start_ray_commands[1]"]
    for _, env, _ in starts:
        assert env["RAY_AUTH_MODE"] == "token"
        assert cv.token_mount(env, cfg["file_mounts"]) == ("/home/ray/.ray/auth_token", "~/.ray/auth_token")
    head_args = starts[0][2]
    assert "--head" in head_args and "--dashboard-host=127.0.0.1" in head_args
    for node in cfg["available_node_types"].values():
        assert node["node_config"]["SecurityGroupIds"] == ["sg-REPLACE_ME"]
    (ssh,) = cfg["provider"]["security_group"]["IpPermissions"]
    assert (ssh["IpProtocol"], ssh["FromPort"], ssh["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in ssh["IpRanges"]] == ["REPLACE_ME"]  # the user's CIDR, never the world


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
    assert "available_node_types.head_cpu.node_config.SecurityGroupIds[0]" in left
    assert "provider.security_group.IpPermissions[0].IpRanges[0].CidrIp" in left
    assert list(cv.placeholders(cv.check_policy())) == ["Statement[0].Resource", "Statement[1].Resource"]
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


def test_strict_mode_fails_until_the_token_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _raw()
    for node in cfg["available_node_types"].values():
        node["node_config"] = {k: "x" if k == "ImageId" else v for k, v in node["node_config"].items()}
        node["node_config"]["SecurityGroupIds"] = ["sg-0123456789abcdef0"]
        node["node_config"].pop("IamInstanceProfile", None)
    cfg["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = "203.0.113.7/32"
    policy = tmp_path / "policy.json"
    filled = cv.POLICY.read_text().replace("REPLACE_ME_BUCKET", "b").replace("REPLACE_ME_PREFIX", "p")
    policy.write_text(filled)
    args = [str(_write(tmp_path, cfg)), "--strict", "--policy", str(policy)]
    monkeypatch.setenv("HOME", str(tmp_path))  # where ~/.ray/auth_token is looked for
    assert cv.main(args) == 1
    out = capsys.readouterr().out
    assert out.count("to fill in before `ray up`") == 1
    assert "~/.ray/auth_token: no token yet (`ray get-auth-token --generate`" in out
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("0" * 32)
    assert cv.main(args) == 0
    assert "to fill in" not in capsys.readouterr().out


def test_ingress_is_the_ssh_rule_and_the_group_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cv.main([str(AWS), "--ingress", "sg-1"]) == 1
    assert "CidrIp: replace REPLACE_ME" in capsys.readouterr().err
    cfg = _raw()
    cfg["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = "203.0.113.7/32"
    assert cv.main([str(_write(tmp_path, cfg)), "--ingress", "sg-1"]) == 0
    ssh, group = json.loads(capsys.readouterr().out)
    assert (ssh["FromPort"], ssh["ToPort"], ssh["IpRanges"][0]["CidrIp"]) == (22, 22, "203.0.113.7/32")
    assert group["IpProtocol"] == "-1"  # all traffic, but only from nodes in the same group
    assert [pair["GroupId"] for pair in group["UserIdGroupPairs"]] == ["sg-1"] and "IpRanges" not in group


def _start(c: dict[str, Any], key: str, old: str, new: str) -> None:
    cmds = c[key]
    assert any(old in cmd for cmd in cmds), (key, old)  # the mutation must hit something
    c[key] = [cmd.replace(old, new) for cmd in cmds]


def _dashboard_everywhere(c: dict[str, Any]) -> None:
    _start(c, "head_start_ray_commands", "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")


def _dashboard_on_a_public_ip(c: dict[str, Any]) -> None:
    _start(c, "head_start_ray_commands", "--dashboard-host=127.0.0.1", "--dashboard-host 10.0.0.5")


def _no_token_mode_on_the_worker(c: dict[str, Any]) -> None:
    _start(c, "worker_start_ray_commands", "RAY_AUTH_MODE=token ", "")


def _no_token_mode_on_the_head(c: dict[str, Any]) -> None:
    _start(c, "head_start_ray_commands", "RAY_AUTH_MODE=token ", "")


def _token_mode_disabled(c: dict[str, Any]) -> None:
    _start(c, "worker_start_ray_commands", "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")


def _ray_default_head_start(c: dict[str, Any]) -> None:
    del c["head_start_ray_commands"]  # Ray's defaults.yaml: no token, dashboard on 0.0.0.0


def _token_not_mounted(c: dict[str, Any]) -> None:
    del c["file_mounts"]["/home/ray/.ray/auth_token"]


def _token_path_not_mounted(c: dict[str, Any]) -> None:
    old = "RAY_AUTH_MODE=token"
    _start(c, "worker_start_ray_commands", old, f"{old} RAY_AUTH_TOKEN_PATH=/t")


def _ssh_from_the_world(c: dict[str, Any]) -> None:
    c["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"] = "0.0.0.0/0"


def _ssh_from_the_world_v6(c: dict[str, Any]) -> None:
    c["provider"]["security_group"]["IpPermissions"][0]["Ipv6Ranges"] = [{"CidrIpv6": "::/0"}]


def _ray_default_security_group(c: dict[str, Any]) -> None:
    del c["available_node_types"]["gpu_worker_spot"]["node_config"]["SecurityGroupIds"]


HEAD, WORKER = "head_start_ray_commands[1]", "worker_start_ray_commands[1]"
RUNS = "`ray start` runs with RAY_AUTH_MODE="


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
        (_dashboard_everywhere, f"{HEAD}: --dashboard-host=0.0.0.0; allowed: 127.0.0.1"),
        (_dashboard_on_a_public_ip, f"{HEAD}: --dashboard-host=10.0.0.5; allowed: 127.0.0.1"),
        (_no_token_mode_on_the_worker, f"{WORKER}: {RUNS}unset; allowed: RAY_AUTH_MODE=token ray start"),
        (_no_token_mode_on_the_head, f"{HEAD}: {RUNS}unset; allowed: RAY_AUTH_MODE=token ray start"),
        (_token_mode_disabled, f"{WORKER}: {RUNS}disabled; allowed: RAY_AUTH_MODE=token ray start"),
        (_ray_default_head_start, f"{HEAD}: {RUNS}unset"),
        (_token_not_mounted, f"file_mounts: no token at /home/ray/.ray/auth_token for {HEAD}"),
        (_token_path_not_mounted, f"file_mounts: no token at /t for {WORKER}"),
        (_ssh_from_the_world, "provider.security_group.IpPermissions[0]: ingress from 0.0.0.0/0"),
        (_ssh_from_the_world_v6, "provider.security_group.IpPermissions[0]: ingress from ::/0"),
        (_ray_default_security_group, "available_node_types.gpu_worker_spot.node_config.SecurityGroupIds"),
    ],
)
def test_broken_copies_fail(tmp_path: Path, mutate: Any, message: str) -> None:
    cfg = copy.deepcopy(_raw())
    mutate(cfg)
    with pytest.raises(cv.ClusterConfigError, match=re.escape(message)):
        cv.validate(_write(tmp_path, cfg))


def test_token_mode_may_be_exported_first(tmp_path: Path) -> None:
    cfg = _raw()
    old, new = "ulimit -n 65536; RAY_AUTH_MODE=token ray", "export RAY_AUTH_MODE=token && ray"
    _start(cfg, "worker_start_ray_commands", old, new)
    assert cv.validate(_write(tmp_path, cfg))["worker_start_ray_commands"][1].startswith("export")


def _policy(tmp_path: Path, statement: int, key: str, value: Any) -> Path:
    policy = json.loads(cv.POLICY.read_text())
    policy["Statement"][statement][key] = value
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return path


@pytest.mark.parametrize(
    ("statement", "key", "value", "message"),
    [
        (1, "Action", "s3:*", "Statement[1].Action='s3:*': name S3 actions one by one"),
        (1, "Action", ["s3:GetObject", "iam:PassRole"], "Statement[1].Action='iam:PassRole'"),
        (1, "Resource", "*", "Statement[1].Resource='*': allowed are arn:aws:s3:::<bucket> and"),
        (1, "Resource", "arn:aws:s3:::b/*", "Statement[1].Resource='arn:aws:s3:::b/*'"),  # the whole bucket
        (0, "Resource", "arn:aws:s3:::*", "Statement[0].Resource='arn:aws:s3:::*'"),
    ],
)
def test_broad_iam_policies_fail(tmp_path: Path, statement: int, key: str, value: Any, message: str) -> None:
    cv.check_policy()  # the shipped one passes
    with pytest.raises(cv.ClusterConfigError, match=re.escape(message)):
        cv.check_policy(_policy(tmp_path, statement, key, value))


def test_the_unmutated_copy_passes(tmp_path: Path) -> None:
    """The round trip through yaml.safe_dump is not what makes the broken copies fail."""
    assert cv.validate(_write(tmp_path, _raw()))["cluster_name"] == "acl-ray"
