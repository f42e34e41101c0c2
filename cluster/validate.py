"""Offline check of a ``ray up`` cluster YAML: Ray's own preparation and schema, then this project's rules.

Ray's part is what ``ray up`` runs before it contacts the cloud (research/ray.md section 4):
``prepare_config`` merges the provider's ``defaults.yaml``, the setup commands, the Docker checks
and each node type's worker bounds, and ``validate_config`` checks the result against
``ray/autoscaler/ray-schema.json`` (no unknown keys, ``resources`` and ``node_config`` on every node
type, integer resources, a ``head_node_type`` among the node types, sum of ``min_workers`` <=
``max_workers``). ``node_config`` goes to boto3 unchecked, so a typo there only shows at launch.

The project's rules on top: the head declares an integer ``TRAIN_DRIVER`` (sweep trial drivers
request it), each worker type has ``min_workers <= max_workers``, and GPU types run their
container with ``--gpus all``. No credentials and no network are needed::

    python cluster/validate.py cluster.yaml            # exit 1 on an invalid config
    python cluster/validate.py cluster.yaml --strict   # ... or on a REPLACE_ME left in it
"""

from __future__ import annotations

import argparse
import copy
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


class ClusterConfigError(ValueError):
    """An invalid cluster YAML, with a one-line reason naming the offending key."""


def _is_gpu_type(node: dict[str, Any]) -> bool:
    instance = str(node.get("node_config", {}).get("InstanceType", ""))
    return node.get("resources", {}).get("GPU", 0) > 0 or instance.startswith(GPU_FAMILIES)


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
    args = parser.parse_args(argv)
    try:
        cfg = validate(args.path)
    except ClusterConfigError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    print(f"valid: {args.path} (cluster {cfg['cluster_name']}, max_workers {cfg['max_workers']})")
    for name, node in cfg["available_node_types"].items():
        nc = node["node_config"]
        bounds = f"{node['min_workers']}-{node['max_workers']} nodes"
        role = "head" if name == cfg["head_node_type"] else bounds
        market = nc.get("InstanceMarketOptions", {}).get("MarketType", "on-demand")
        print(f"  {name}: {nc.get('InstanceType')} {market}, {role}, resources {node['resources']}")
    left = list(placeholders(cfg))
    for p in left:
        print(f"  to fill in before `ray up`: {p}")
    return 1 if args.strict and left else 0


if __name__ == "__main__":
    sys.exit(main())
