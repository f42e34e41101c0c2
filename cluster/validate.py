"""Offline check of a ``ray up`` cluster YAML: Ray's own preparation and schema, then this project's rules.

Ray's part is what ``ray up`` runs before it contacts the cloud (research/ray.md section 4):
``prepare_config`` merges the provider's ``defaults.yaml``, the setup commands, the Docker checks
and each node type's worker bounds, and ``validate_config`` checks the result against
``ray/autoscaler/ray-schema.json`` (no unknown keys, ``resources`` and ``node_config`` on every node
type, integer resources, a ``head_node_type`` among the node types, sum of ``min_workers`` <=
``max_workers``). ``node_config`` goes to boto3 unchecked, so a typo there only shows at launch.

The project's rules on top: the head declares an integer ``TRAIN_DRIVER`` (sweep trial drivers
request it), each worker type has ``min_workers <= max_workers``, and GPU types run their
container with ``--gpus all``. Security (README "Security"): every ``ray start`` runs with
``RAY_AUTH_MODE=token`` and the token file is in ``file_mounts``; the dashboard binds to loopback;
every node type names its ``SecurityGroupIds`` (a group Ray creates lets SSH in from 0.0.0.0/0) and
no ``provider.security_group`` rule admits the whole internet; ``cluster/iam_policy.json`` grants
S3 actions on one bucket and objects under one prefix. No credentials and no network are needed::

    python cluster/validate.py cluster.yaml            # exit 1 on an invalid config
    python cluster/validate.py cluster.yaml --strict   # ... or on a REPLACE_ME or token left to make
    python cluster/validate.py --ingress sg-0123...    # the group's rules, JSON for the aws CLI
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config  # what `ray up` uses

DRIVER_RESOURCE = "TRAIN_DRIVER"  # acl_ray.orchestration.tune.trial_resources
PLACEHOLDER = "REPLACE_ME"
GPU_FAMILIES = ("g", "p")  # EC2 accelerated families: g4dn, g5, g6, p4d, p5 ...
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # `ray start --dashboard-host` default: 127.0.0.1
# Where `ray start` looks for the token without RAY_AUTH_TOKEN_PATH: ~/.ray/auth_token, and HOME is
# /home/ray in the rayproject images (ray._private.authentication.authentication_token_setup).
DEFAULT_TOKEN_PATHS = ("/home/ray/.ray/auth_token", "~/.ray/auth_token")
WORLD = ("0.0.0.0/0", "::/0")
POLICY = Path(__file__).resolve().parent / "iam_policy.json"


class ClusterConfigError(ValueError):
    """An invalid cluster YAML, with a one-line reason naming the offending key."""


def _is_gpu_type(node: dict[str, Any]) -> bool:
    instance = str(node.get("node_config", {}).get("InstanceType", ""))
    return node.get("resources", {}).get("GPU", 0) > 0 or instance.startswith(GPU_FAMILIES)


def _assignments(words: list[str]) -> dict[str, str]:
    return {k: v for k, _, v in (w.partition("=") for w in words if "=" in w)}


def ray_starts(cfg: dict[str, Any]) -> Iterator[tuple[str, dict[str, str], list[str]]]:
    """Each ``ray start`` in the start commands: (dotted path, its environment, its arguments).

    The environment is what the command line sets for it: ``VAR=value ray start`` or an earlier
    ``export VAR=value``. Commands are split at ``;``, ``&&`` and ``||``, which Ray's own use.
    """
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for i, cmd in enumerate(cfg.get(key) or []):
            exported: dict[str, str] = {}
            for part in re.split(r";|&&|\|\|", cmd):
                try:
                    words = shlex.split(part)
                except ValueError as e:
                    raise ClusterConfigError(f"{key}[{i}]: cannot read {part.strip()!r} ({e})") from None
                if words[:1] == ["export"]:
                    exported |= _assignments(words[1:])
                at = next((j for j in range(len(words) - 1) if words[j : j + 2] == ["ray", "start"]), None)
                if at is not None:
                    yield f"{key}[{i}]", exported | _assignments(words[:at]), words[at + 2 :]


def token_mount(env: dict[str, str], mounts: dict[str, str]) -> tuple[str, str | None]:
    """(the remote path ``ray start`` reads the token from, the local file mounted there or None)."""
    wanted = [env["RAY_AUTH_TOKEN_PATH"]] if "RAY_AUTH_TOKEN_PATH" in env else list(DEFAULT_TOKEN_PATHS)
    remote = next((p for p in wanted if p in mounts), wanted[0])
    return remote, mounts.get(remote)


def _option(args: list[str], name: str) -> str | None:
    for j, a in enumerate(args):
        if a.startswith(f"{name}="):
            return a.split("=", 1)[1]
        if a == name and j + 1 < len(args):
            return args[j + 1]
    return None


def security_checks(cfg: dict[str, Any]) -> None:
    """Token auth, a loopback dashboard and the project's security group; raise on the first failure."""
    starts = list(ray_starts(cfg))
    if not any("--head" in args for _, _, args in starts):
        raise ClusterConfigError("head_start_ray_commands: no `RAY_AUTH_MODE=token ray start --head ...`")
    for where, env, args in starts:
        mode = env.get("RAY_AUTH_MODE", "unset")
        if mode != "token":
            raise ClusterConfigError(
                f"{where}: `ray start` runs with RAY_AUTH_MODE={mode}; allowed: "
                "RAY_AUTH_MODE=token ray start ..."
            )
        remote, local = token_mount(env, cfg.get("file_mounts") or {})
        if local is None:
            raise ClusterConfigError(
                f"file_mounts: no token at {remote} for {where}; add {remote}: ~/.ray/auth_token "
                "(`ray get-auth-token --generate` writes it)"
            )
        host = _option(args, "--dashboard-host") if "--head" in args else None
        if host is not None and host not in LOOPBACK:
            raise ClusterConfigError(
                f"{where}: --dashboard-host={host}; allowed: 127.0.0.1 "
                "(reach it with `ray dashboard cluster.yaml`)"
            )
    for name, node in cfg["available_node_types"].items():
        if not node["node_config"].get("SecurityGroupIds"):
            raise ClusterConfigError(
                f"available_node_types.{name}.node_config.SecurityGroupIds: missing; name the project's "
                "group (a group Ray creates lets SSH in from 0.0.0.0/0)"
            )
    for i, rule in enumerate(cfg["provider"].get("security_group", {}).get("IpPermissions", [])):
        sources = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
        sources += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        for cidr in sources:
            if cidr in WORLD:
                raise ClusterConfigError(
                    f"provider.security_group.IpPermissions[{i}]: ingress from {cidr}; allowed: your own "
                    "network's CIDR (e.g. 203.0.113.7/32)"
                )


def ingress_rules(cfg: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    """The project's group's ingress for ``aws ec2 authorize-security-group-ingress --ip-permissions``:
    ``provider.security_group``'s rules and all traffic between the group's own nodes (Ray's ports:
    GCS 6379, object manager 8076, raylet and worker ports are all in use between nodes)."""
    rules = copy.deepcopy(cfg["provider"].get("security_group", {}).get("IpPermissions", []))
    pair = {"GroupId": group_id, "Description": "Ray nodes to each other"}
    return [*rules, {"IpProtocol": "-1", "UserIdGroupPairs": [pair]}]


def check_policy(path: str | Path = POLICY) -> dict[str, Any]:
    """The workers' IAM policy: S3 actions only, on one bucket and objects under a prefix of it."""
    policy = json.loads(Path(path).read_text())
    for i, st in enumerate(policy["Statement"]):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for a in actions:
            if not a.startswith("s3:") or "*" in a:
                raise ClusterConfigError(f"{path}: Statement[{i}].Action={a!r}: name S3 actions one by one")
        for r in resources:
            bucket, _, key = r.removeprefix("arn:aws:s3:::").partition("/")
            if not r.startswith("arn:aws:s3:::") or "*" in bucket or key.startswith("*"):
                raise ClusterConfigError(
                    f"{path}: Statement[{i}].Resource={r!r}: allowed are arn:aws:s3:::<bucket> and "
                    "arn:aws:s3:::<bucket>/<prefix>/*"
                )
    return policy


def project_checks(cfg: dict[str, Any]) -> None:
    """This project's rules on a prepared config; raise :class:`ClusterConfigError` on the first failure."""
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    driver = types[head].get("resources", {}).get(DRIVER_RESOURCE)
    if not isinstance(driver, int) or driver < 1:
        raise ClusterConfigError(
            f"available_node_types.{head}.resources.{DRIVER_RESOURCE}={driver!r}: the head must declare an "
            "integer >= 1 (sweep trial drivers request 1 each)"
        )
    global_opts = cfg.get("docker", {}).get("run_options", [])
    for name, node in types.items():
        if name == head:
            continue
        lo, hi = node.get("min_workers", 0), node.get("max_workers", cfg["max_workers"])
        if lo > hi:
            raise ClusterConfigError(f"available_node_types.{name}: min_workers={lo} > max_workers={hi}")
        if cfg.get("docker") and _is_gpu_type(node):
            opts = list(global_opts) + list(node.get("docker", {}).get("worker_run_options", []))
            opts += cfg["docker"].get("worker_run_options", [])
            if not any("--gpus" in str(o) for o in opts):
                raise ClusterConfigError(
                    f"available_node_types.{name}: a GPU node type needs docker worker_run_options "
                    '["--gpus all"] (Ray does not always add the NVIDIA runtime, ray#43231)'
                )
    security_checks(cfg)


def validate(path: str | Path) -> dict[str, Any]:
    """Prepare and validate the cluster YAML at ``path`` as ``ray up`` would; return the prepared config.

    Raises:
        ClusterConfigError: the YAML is not a mapping, fails Ray's schema or checks, or a project rule.
    """
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or "provider" not in raw:
        raise ClusterConfigError(f"{path}: not a cluster config (a mapping with a 'provider' section)")
    try:
        cfg = prepare_config(copy.deepcopy(raw))
        validate_config(cfg)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ClusterConfigError(f"{where}: {e.message}") from None
    except (ValueError, KeyError, AssertionError, RuntimeError) as e:
        raise ClusterConfigError(str(e) or type(e).__name__) from None
    project_checks(cfg)
    return cfg


def placeholders(node: Any, where: str = "") -> Iterator[str]:
    """Dotted paths of the string values that still hold ``REPLACE_ME``."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from placeholders(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from placeholders(v, f"{where}[{i}]")
    elif isinstance(node, str) and PLACEHOLDER in node:
        yield where


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    default = Path(__file__).resolve().parent.parent / "cluster.yaml"
    parser.add_argument("path", nargs="?", default=str(default))
    parser.add_argument("--strict", action="store_true", help=f"also fail while a {PLACEHOLDER} is left")
    parser.add_argument("--policy", default=str(POLICY), help="the workers' IAM policy (JSON)")
    parser.add_argument("--ingress", metavar="SG_ID", help="print the group's ingress rules (JSON) and exit")
    args = parser.parse_args(argv)
    try:
        cfg = validate(args.path)
        policy = check_policy(args.policy)
    except ClusterConfigError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    if args.ingress:
        group = cfg["provider"].get("security_group", {})
        unset = [f"provider.security_group.{p}" for p in placeholders(group)]
        if unset:
            print(f"invalid: {unset[0]}: replace {PLACEHOLDER} with your network's CIDR", file=sys.stderr)
            return 1
        print(json.dumps(ingress_rules(cfg, args.ingress)))
        return 0
    print(f"valid: {args.path} (cluster {cfg['cluster_name']}, max_workers {cfg['max_workers']})")
    for name, node in cfg["available_node_types"].items():
        nc = node["node_config"]
        bounds = f"{node['min_workers']}-{node['max_workers']} nodes"
        role = "head" if name == cfg["head_node_type"] else bounds
        market = nc.get("InstanceMarketOptions", {}).get("MarketType", "on-demand")
        print(f"  {name}: {nc.get('InstanceType')} {market}, {role}, resources {node['resources']}")
    left = list(placeholders(cfg)) + [f"{args.policy}: {p}" for p in placeholders(policy)]
    tokens = {token_mount(env, cfg["file_mounts"])[1] for _, env, _ in ray_starts(cfg)}
    for local in sorted(t for t in tokens if t and not Path(os.path.expanduser(t)).is_file()):
        left.append(f"{local}: no token yet (`ray get-auth-token --generate` makes ~/.ray/auth_token)")
    for p in left:
        print(f"  to fill in before `ray up`: {p}")
    return 1 if args.strict and left else 0


if __name__ == "__main__":
    sys.exit(main())
