"""Shared by the experiment scripts: run one ``acl-ray`` command, stop the study if it fails."""

import sys

from acl_ray.cli import main as acl_ray


def run(argv: list[str]) -> None:
    print("acl-ray " + " ".join(argv), flush=True)
    if acl_ray(argv) != 0:
        sys.exit(f"failed: acl-ray {' '.join(argv)}")


def sets(values: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [a for v in values for a in ("--set", v)]
