"""``acl-ray``: the console entry point. Subcommands are thin; the logic lives in the library.

``DESCRIPTION`` (not this docstring) is what ``acl-ray --help`` tells a user.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from rich.markup import escape

from acl_ray.config.fields import parse_set
from acl_ray.config.pretrain import Config, load_config
from acl_ray.config.protocols import PRESETS
from acl_ray.console import console
from acl_ray.results.summary import Interrupted

DESCRIPTION = """\
Adversarial Contrastive Learning (ACL; Jiang et al., NeurIPS 2020): pre-train robust encoders on
unlabelled images, measure their robust accuracy, and tune ACL's knobs (PGD steps, eps, temperature,
batch size, ...) with Ray Tune + Optuna sweeps, on a laptop CPU or a Ray cluster.

start with:
  acl-ray sweep --config configs/sweep_digits.yaml --out runs/s1   a sweep on the bundled digits (CPU)
  acl-ray dashboard runs/s1                                         watch its Optuna study in a browser
  acl-ray analyze runs/s1                                           tables, Pareto plots, the best config
  acl-ray pretrain --out runs/ds                                    one ACL-DS pre-training run
  acl-ray finetune --checkpoint runs/ds --protocol slf --out runs/slf   its robust accuracy (SLF)"""
EPILOG = "acl-ray COMMAND --help shows a command's options; README.md has the rest."

# Bad input a user can fix, printed as one line with exit code 2: a wrong value or file (ValueError),
# a missing, unreadable or unreachable path, dataset or cluster (OSError), YAML that does not parse.
# Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError, yaml.YAMLError)


def _error_line(e: BaseException) -> str:
    """The error as one line of rich markup: whitespace runs joined, brackets escaped.

    Unescaped, rich reads ``[low, high]`` or ``[Errno 2]`` as a style tag and drops it.
    """
    text = " ".join(str(e).split()) or type(e).__name__
    return escape(f"invalid YAML: {text}" if isinstance(e, yaml.YAMLError) else text)


def _say(text: str) -> None:
    """One result line holding user or data text (paths, names): printed verbatim, never wrapped."""
    console.print(text, markup=False, soft_wrap=True)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file overriding the defaults (same keys as config.yaml)")
    _set_arg(p, "attack.eps=0.05")


def _resolve(args: argparse.Namespace) -> Config:
    if getattr(args, "resume", False):
        saved = Path(args.out) / "config.yaml"
        if args.config:
            raise ValueError("--config cannot be combined with --resume: the run's own config.yaml is used")
        if saved.exists():
            return load_config(saved, args.overrides)
    return load_config(args.config, args.overrides)


def cmd_pretrain(args: argparse.Namespace) -> int:
    cfg = _resolve(args)  # a bad config fails before the heavy imports

    from acl_ray.algorithm.pretrain import run_pretrain

    if args.workers is None:
        rows = run_pretrain(cfg, args.out, resume=args.resume)
    else:
        from acl_ray.orchestration.ray_train import run_pretrain_ray

        rows = run_pretrain_ray(
            cfg,
            args.out,
            args.workers,
            resume=args.resume,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            address=args.address,
            max_failures=args.max_failures,
        )
    if rows:
        _say(
            f"done: {len(rows)} epochs, loss {rows[0]['train/loss']:.4f} -> {rows[-1]['train/loss']:.4f}; "
            f"run in {args.out}"
        )
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from acl_ray.algorithm.finetune import finetune, pretrained_dataset
    from acl_ray.algorithm.robustness import eps_name
    from acl_ray.config.protocols import FinetuneConfig

    if args.protocol is None and args.preset is None:
        raise ValueError("finetune needs --protocol (slf | alf | aff) or --preset (a published protocol)")
    values = {"finetune.preset": args.preset} if args.preset is not None else {}
    if args.protocol is not None:
        preset_protocol = FinetuneConfig().override(values).protocol if args.preset else args.protocol
        if preset_protocol != args.protocol:
            msg = f"--protocol {args.protocol} contradicts --preset {args.preset} ({preset_protocol})"
            raise ValueError(msg)
        values["finetune.protocol"] = args.protocol
    values.update(parse_set(args.overrides))
    if args.route is not None:
        values["finetune.route"] = args.route
    # The checkpoint's dataset sets the threat model (CIFAR: 8/255); a preset and --set come after it.
    cfg = FinetuneConfig().override({"finetune.threat_model": pretrained_dataset(args.checkpoint), **values})
    m = finetune(args.checkpoint, cfg, args.out)
    _say(
        f"{m['protocol']} ({m['route']} BN): val SA {m['val/standard_acc']:.3f} "
        f"RA {m['val/robust_acc']:.3f}; "
        f"test SA {m['eval/standard_acc']:.3f} RA {m['eval/robust_acc']:.3f} ({m['eval/attack']}, "
        f"eps {eps_name(m['eval/eps'])}); {args.out}/metrics.json"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from acl_ray.algorithm.robustness import eps_name, evaluate_checkpoint

    m = evaluate_checkpoint(args.checkpoint, args.attack, args.eps, parse_set(args.overrides), args.checks)
    attack = "autoattack" if m["eval/attack"].startswith("autoattack") else "pgd"
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"evaluate_{attack}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    _say(
        f"test SA {m['eval/standard_acc']:.3f}  RA {m['eval/robust_acc']:.3f} ({m['eval/attack']}, eps "
        f"{eps_name(m['eval/eps'])})  PGD RA {m['eval/pgd_robust_acc']:.3f}; {out}/metrics.json"
    )
    for w in m["eval/warnings"]:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", soft_wrap=True)
    return 0


def _set_arg(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one field, e.g. --set {example} (repeatable)",
    )


def cmd_semisup(args: argparse.Namespace) -> int:
    from acl_ray.algorithm.finetune import pretrained_dataset
    from acl_ray.algorithm.robustness import eps_name
    from acl_ray.algorithm.semisup import semisup
    from acl_ray.config.protocols import SemisupConfig

    values = parse_set(args.overrides)
    if args.label_fraction is not None:
        values["semisup.label_fraction"] = args.label_fraction
    # As finetune: the checkpoint's dataset sets the threat model, --set comes after it.
    cfg = SemisupConfig().override({"semisup.threat_model": pretrained_dataset(args.checkpoint), **values})
    m = semisup(args.checkpoint, cfg, args.out)
    _say(
        f"semisup ({m['semisup/labelled']} labelled): teacher test SA {m['teacher/standard_acc']:.3f}; "
        f"test SA {m['eval/standard_acc']:.3f} RA {m['eval/robust_acc']:.3f} ({m['eval/attack']}, "
        f"eps {eps_name(m['eval/eps'])}); {args.out}/metrics.json"
    )
    return 0


def cmd_import_official(args: argparse.Namespace) -> int:
    from acl_ray.algorithm.official import import_official

    s = import_official(args.path, args.out, args.dataset, parse_set(args.overrides))
    epoch = f"epoch {s['epoch']}, " if s["epoch"] else ""
    _say(
        f"imported {s['tensors']} tensors ({epoch}BN routes {', '.join(s['routes'])}, "
        f"{s['proj_layers']}-layer head) into {args.out}; next: acl-ray finetune --checkpoint {args.out}"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from acl_ray.config.space import validate_space
    from acl_ray.config.sweep import load_sweep

    if args.resume:
        if args.config or args.overrides:
            raise ValueError("--resume continues a sweep as it was saved: drop --config / --set")
        from acl_ray.orchestration.tune import resume_sweep

        resume_sweep(args.resume, args.address, verbose=args.verbose)
        return 0
    if not args.out:
        raise ValueError("--out is required for a new sweep (or pass --resume DIR)")
    sweep = load_sweep(args.config, args.overrides)
    validate_space(sweep.space, sweep.base)  # before Ray is imported; run_sweep also checks batch sizes

    from acl_ray.orchestration.tune import run_sweep

    run_sweep(sweep, args.out, args.address, verbose=args.verbose)
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from acl_ray.orchestration.tune import confirm_sweep

    confirm_sweep(args.dir, args.address, verbose=args.verbose, overrides=args.overrides)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from acl_ray.results.analyze import analyze

    analyze(args.dir, args.select, args.metric, args.min_standard_acc)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from acl_ray.orchestration.dashboard import serve, sweep_study

    if not 0 <= args.port <= 65535:
        raise ValueError(f"Illegal --port={args.port}: must be in [0, 65535] (0: a free port)")
    url, name = sweep_study(args.dir)
    serve(url, name, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acl-ray",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # DESCRIPTION's lines as written
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    p = sub.add_parser("pretrain", help="ACL pre-training (in-process)")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory (config.yaml, metrics.jsonl, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    ray_group = p.add_argument_group("Ray Train (runs in-process when --workers is not given)")
    ray_group.add_argument("--workers", type=int, help="number of DDP workers under Ray Train")
    ray_group.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (0 = CPU)")
    ray_group.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker")
    ray_group.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    ray_group.add_argument(
        "--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint"
    )
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="SLF / ALF / AFF finetuning + PGD evaluation")
    p.add_argument("--checkpoint", required=True, help="pre-training run directory (or its checkpoint.pt)")
    p.add_argument("--protocol", help="slf | alf | aff (required unless --preset gives it)")
    presets = " | ".join(PRESETS)
    p.add_argument("--preset", help=f"a published protocol: {presets} (README)")
    p.add_argument("--out", required=True, help="new directory for metrics.json, checkpoint.pt, config.yaml")
    p.add_argument("--route", help="BN route kept: auto (adv when present) | clean | adv")
    _set_arg(p, "finetune.epochs=20 or eval.eps=0.05")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="robust accuracy of a finetuned classifier (PGD or AutoAttack)")
    p.add_argument("--checkpoint", required=True, help="finetune output directory (or its checkpoint.pt)")
    p.add_argument("--attack", help="pgd | autoattack (default: the classifier's eval.attack)")
    p.add_argument("--eps", type=float, help="L-inf radius in (0, 1] pixels (default: its eval.eps)")
    p.add_argument("--checks", type=int, default=200, help="test points for the masking checks (0 = none)")
    p.add_argument("--out", help="directory for metrics.json (default: CHECKPOINT/evaluate_<attack>)")
    _set_arg(p, "eval.steps=50 or eval.aa_version=standard")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("semisup", help="semi-supervised robust finetuning: clean teacher, TRADES + KD")
    p.add_argument("--checkpoint", required=True, help="pre-training run directory (or its checkpoint.pt)")
    p.add_argument("--out", required=True, help="new directory for metrics.json, checkpoint.pt, config.yaml")
    p.add_argument("--label-fraction", type=float, help="share of the training split with labels, in (0, 1]")
    _set_arg(p, "semisup.epochs=5 or eval.eps=0.05")
    p.set_defaults(func=cmd_semisup)

    p = sub.add_parser("import-official", help="a checkpoint of the official ACL code as a pre-training run")
    p.add_argument("path", help="file saved by the official train_simCLR.py (e.g. the released ACL_DS.pt)")
    p.add_argument("--out", required=True, help="new pre-training run directory for acl-ray finetune")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"), help="its data.name")
    _set_arg(p, "data.root=/data/cifar or data.download=false")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("sweep", help="Ray Tune + Optuna sweep over ACL's knobs (robust accuracy per trial)")
    p.add_argument("--config", help="sweep YAML (sections base, space, sweep, proxy, final)")
    _set_arg(p, "sweep.num_samples=8, attack.eps=0.05 or final.protocol=alf")
    p.add_argument("--out", help="sweep folder (new), or the sweep to continue with --resume")
    p.add_argument("--resume", metavar="DIR", help="continue a killed sweep in DIR")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's and Ray Train's worker output here (always kept in DIR/logs/)",
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("confirm", help="train a sweep's top trials and controls again with fresh seeds")
    p.add_argument("dir", help="finished sweep folder (or one whose confirmation was interrupted: resumed)")
    _set_arg(p, "sweep.confirm.top_k=3, sweep.confirm.seeds=3 or sweep.confirm.controls=paper,dynacl")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--verbose", action="store_true", help="also show Ray's worker output here")
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser("analyze", help="offline sweep analysis: Parquet tables, Pareto plots, best config")
    p.add_argument("dir", help="sweep folder (finished, failed or killed); writes DIR/analysis/")
    p.add_argument("--select", default="best", help="best | knee | min-sa: the trial best_config.yaml holds")
    p.add_argument("--min-standard-acc", type=float, help="min-sa: the lowest standard accuracy accepted")
    p.add_argument("--metric", default="val/robust_acc", help="val|eval|proxy / robust_acc|standard_acc")
    p.set_defaults(func=cmd_analyze, overrides=[])

    p = sub.add_parser("dashboard", help="optuna-dashboard on a sweep's Optuna study (http://127.0.0.1:PORT)")
    p.add_argument("dir", help="sweep folder, running or finished (DIR/study.db or its sweep.study_storage)")
    p.add_argument("--port", type=int, default=8080, help="local port (default 8080)")
    p.set_defaults(func=cmd_dashboard, overrides=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parse_set(args.overrides)  # reject malformed --set before any work
        return int(args.func(args))
    except EXPECTED_ERRORS as e:  # bad input: one line, nothing written over
        console.print(f"[red]error:[/red] {_error_line(e)}", soft_wrap=True)
        return 2
    except Interrupted as e:  # Ctrl-C on a sweep or confirmation: saved, to be continued
        console.print(f"[yellow]interrupted:[/yellow] {_error_line(e)}", soft_wrap=True)
        return 130  # the shell's code for a command ended by SIGINT


if __name__ == "__main__":
    sys.exit(main())
