"""Semi-supervised robust training from ACL on digits (the paper's section 4.4, on the embedded set).

For each pre-training (ACL-DS and the SimCLR baseline, digits defaults) and each label fraction
(the paper's 1% and 10%), ``acl-ray semisup`` trains a clean teacher on the labelled images, then
the student with TRADES + distillation on labelled and pseudo-labelled images, and tests it with
PGD-20 (CE and CW margin, worst case) at eps 0.1. Writes ``OUT/results.json`` and ``OUT/table.md``.

    python experiments/semisup_digits.py --out runs/semisup                     # ~10 min, 2 CPU cores
    python experiments/semisup_digits.py --out runs/semisup --checkpoint runs/ds   # reuse a pre-training
    python experiments/semisup_digits.py --out /tmp/s --smoke                   # seconds: synthetic, tiny

Finished steps are skipped, so running it again continues an interrupted study.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import run, sets

SMOKE_PRETRAIN = [
    "data.name=synthetic", "data.synthetic_size=200", "data.batch_size=32", "run.epochs=1",
    "attack.steps=1", "run.threads=1", "run.progress=false",
]
SMOKE_SEMISUP = [
    "semisup.teacher_epochs=1", "semisup.epochs=1", "semisup.train_steps=1", "semisup.threads=1",
    "eval.steps=2",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="study directory")
    ap.add_argument("--smoke", action="store_true", help="synthetic data, 1 epoch, ACL-DS at 10%% only")
    ap.add_argument("--checkpoint", help="an existing pre-training run to use instead of pre-training here")
    ap.add_argument("--variants", nargs="+", default=["ds", "simclr"], choices=["simclr", "a2a", "a2s", "ds"])
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1], help="labelled shares")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="semisup / eval override, e.g. semisup.epochs=20 (repeatable)")
    args = ap.parse_args()
    out = Path(args.out)
    variants, fractions = (["ds"], [0.1]) if args.smoke else (args.variants, args.fractions)
    runs = {v: out / f"pretrain_{v}" for v in variants}
    if args.checkpoint:  # one given pre-training, named after its folder
        runs = {Path(args.checkpoint).name: Path(args.checkpoint)}
    for variant, pre in runs.items():
        if not (pre / "checkpoint.pt").exists():
            pre_sets = [f"model.variant={variant}"] + (SMOKE_PRETRAIN if args.smoke else [])
            run(["pretrain", "--out", str(pre), *sets(pre_sets)])
    rows = []
    for variant, pre in runs.items():
        for f in fractions:
            ss = out / f"semisup_{variant}_{f:g}"
            if not (ss / "metrics.json").exists():
                extra = (SMOKE_SEMISUP if args.smoke else []) + args.overrides
                run(["semisup", "--checkpoint", str(pre), "--out", str(ss), "--label-fraction", str(f),
                     *sets(extra)])
            m = json.loads((ss / "metrics.json").read_text())
            rows.append({"pretrain": variant, "label_fraction": f, **m})
    lines = ["| pre-training | labelled | teacher SA | test SA | test RA | attack |"]
    lines.append("|---|---:|---:|---:|---:|---|")
    for r in rows:
        lines.append(
            f"| {r['pretrain']} | {r['label_fraction']:g} ({r['semisup/labelled']}) | "
            f"{r['teacher/standard_acc']:.3f} | {r['eval/standard_acc']:.3f} | {r['eval/robust_acc']:.3f} | "
            f"{r['eval/attack']}, eps {r['eval/eps']:g} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table + f"\n{out / 'results.json'}")


if __name__ == "__main__":
    main()
