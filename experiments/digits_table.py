"""The digits acceptance table: ACL-DS vs SimCLR vs a random encoder, SLF / ALF / AFF, 3 seeds.

Pre-trains (or reuses) ``RUNS/{ds,simclr}_s{seed}`` with the default config (digits, 40 epochs),
builds ``RUNS/random_s{seed}`` (untrained encoder), finetunes every (model, protocol, seed) into
``OUT/ft/...`` with the default finetune settings, evaluates at eps 0.1 with PGD-20 (CE + CW, worst
case per point) and with AutoAttack (APGD-CE + APGD-T), and writes ``OUT/table.md`` and
``OUT/results.json``. Finished pieces are reused, so the script resumes, and several copies with
disjoint ``--seeds`` can run side by side before one last run with all seeds writes the table::

    python experiments/digits_table.py --out results/digits --runs results/digits/runs
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from acl_ray.algorithm.finetune import finetune, random_checkpoint
from acl_ray.algorithm.pretrain import run_pretrain
from acl_ray.algorithm.robustness import evaluate_checkpoint
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import FinetuneConfig

MODELS = {"ds": "ACL-DS", "simclr": "SimCLR", "random": "random init"}
PROTOCOLS = ("slf", "alf", "aff")
AA_NAMES = {"fast": "APGD-CE + APGD-T", "standard": "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square"}


def _pretrained(runs: Path, model: str, seed: int, threads: int) -> Path:
    run = runs / f"{model}_s{seed}"
    if (run / "checkpoint.pt").exists():
        return run
    cfg = Config().override({"run.seed": seed, "run.threads": threads, "run.progress": False})
    if model == "random":
        return random_checkpoint(cfg, run)
    run_pretrain(cfg.override({"model.variant": model}), run)
    return run


def _row(
    out: Path, runs: Path, model: str, protocol: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    ft = out / "ft" / f"{model}_s{seed}_{protocol}"
    if not (ft / "metrics.json").exists():
        cfg = FinetuneConfig(protocol=protocol, seed=seed, threads=args.threads)
        finetune(_pretrained(runs, model, seed, args.threads), cfg, ft)
    row = {"model": model, "protocol": protocol, "seed": seed}
    row.update(json.loads((ft / "metrics.json").read_text()))
    if args.autoattack:
        folder = "evaluate_autoattack" + ("" if args.aa_version == "fast" else f"_{args.aa_version}")
        aa_file = ft / folder / "metrics.json"
        if not aa_file.exists():
            aa = evaluate_checkpoint(ft, attack="autoattack", overrides={"eval.aa_version": args.aa_version})
            aa_file.parent.mkdir(exist_ok=True)
            aa_file.write_text(json.dumps(aa, indent=2))
        aa = json.loads(aa_file.read_text())
        row.update({"aa/robust_acc": aa["eval/robust_acc"], "aa/warnings": aa["eval/warnings"]})
    return row


def _stat(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [r[key] for r in rows]
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def summarise(
    rows: list[dict[str, Any]], seeds: list[int], aa_version: str = "fast"
) -> tuple[str, dict[str, Any]]:
    """Markdown table (mean ± std over seeds) and the issue's acceptance checks."""
    lines = [
        f"Digits, eps 0.1, PGD-20 CE+CW worst case (AA: {AA_NAMES[aa_version]});"
        f" mean ± std over seeds {seeds}.",
        "",
        "| model | " + " | ".join(f"{p} SA | {p} RA | {p} AA" for p in map(str.upper, PROTOCOLS)) + " |",
        "|---|" + "---|" * 3 * len(PROTOCOLS),
    ]
    summary: dict[str, Any] = {}
    for model, name in MODELS.items():
        cells = []
        for p in PROTOCOLS:
            sel = [r for r in rows if r["model"] == model and r["protocol"] == p]
            for key in ("eval/standard_acc", "eval/robust_acc", "aa/robust_acc"):
                if sel and key in sel[0]:
                    m, s = _stat(sel, key)
                    summary[f"{model}/{p}/{key}"] = {"mean": m, "std": s}
                    cells.append(f"{m:.3f} ± {s:.3f}")
                else:
                    cells.append("—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def ra(model: str) -> float:
        return float(summary.get(f"{model}/slf/eval/robust_acc", {"mean": float("nan")})["mean"])

    with_aa = [r for r in rows if "aa/robust_acc" in r]
    gaps = {
        k: [r["eval/robust_acc"] - r["aa/robust_acc"]
            for r in with_aa if r["model"] == k]
        for k in MODELS
    }
    checks = {
        "ACL-DS SLF RA >= 0.55": ra("ds") >= 0.55,
        "ACL-DS SLF RA >= SimCLR + 0.25": ra("ds") >= ra("simclr") + 0.25,
        "random SLF RA < ACL-DS": ra("random") < ra("ds"),
        "RA <= SA everywhere": all(r["eval/robust_acc"] <= r["eval/standard_acc"] for r in rows),
    }
    for k, g in gaps.items():
        if g:
            checks[f"{MODELS[k]}: |AA - PGD| <= 0.05"] = max(abs(v) for v in g) <= 0.05
            checks[f"{MODELS[k]}: AA <= PGD + 0.01"] = min(g) >= -0.01
    lines += ["", *(f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items())]
    for k, g in gaps.items():
        if g:
            lines.append(f"- {MODELS[k]}: PGD - AA from {min(g):+.3f} to {max(g):+.3f} ({len(g)} runs)")
    warned = sorted({w for r in rows for w in r.get("aa/warnings", [])})
    lines += [f"- masking warning: {w}" for w in warned]
    return "\n".join(lines) + "\n", {"summary": summary, "checks": checks, "pgd_minus_aa": gaps}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", required=True, help="directory for table.md, results.json and ft/")
    parser.add_argument("--runs", help="pre-training runs (default: OUT/runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--no-autoattack", dest="autoattack", action="store_false")
    parser.add_argument("--aa-version", choices=tuple(AA_NAMES), default="fast",
                        help="fast: APGD-CE + APGD-T; standard: the published AutoAttack (slower)")
    args = parser.parse_args()
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "runs"
    rows = [
        _row(out, runs, model, protocol, seed, args)
        for seed in args.seeds for model in args.models for protocol in PROTOCOLS
    ]
    table, extra = summarise(rows, args.seeds, args.aa_version)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"rows": rows, **extra}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
