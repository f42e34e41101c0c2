"""``acl-ray``: the console entry point. Subcommands are thin; the logic lives in the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from acl_ray.config import Config, load_config, parse_set
from acl_ray.console import console


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file overriding the defaults (same keys as config.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set attack.eps=0.05 (repeatable)",
    )


def _resolve(args: argparse.Namespace) -> Config:
    if getattr(args, "resume", False):
        saved = Path(args.out) / "config.yaml"
        if args.config:
            raise ValueError("--config cannot be combined with --resume: the run's own config.yaml is used")
        if saved.exists():
            return load_config(saved, args.overrides)
    return load_config(args.config, args.overrides)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from acl_ray.run_pretrain import run_pretrain

    cfg = _resolve(args)
    rows = run_pretrain(cfg, args.out, resume=args.resume)
    if rows:
        console.print(
            f"done: {len(rows)} epochs, loss {rows[0]['train/loss']:.4f} -> {rows[-1]['train/loss']:.4f}; "
            f"run in {args.out}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acl-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="ACL pre-training (in-process)")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory (config.yaml, metrics.jsonl, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parse_set(args.overrides)  # reject malformed --set before any work
        return int(args.func(args))
    except ValueError as e:  # bad input: one line, nothing written over
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
