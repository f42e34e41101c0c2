"""The embedded default: ACL-DS pre-training on digits, then SLF (linear head, clean data) with PGD-20.

    python experiments/digits_default.py --out runs/digits_default        # ~1-2 min on 2 CPU cores
    python experiments/digits_default.py --out /tmp/d --smoke             # seconds: synthetic, 1 epoch

Writes ``OUT/pretrain`` (an ``acl-ray pretrain`` run), ``OUT/slf`` (an ``acl-ray finetune`` output)
and ``OUT/results.json`` (both runs' final metrics). Extra ``--set KEY=VALUE`` flags go to the
pre-training (``--set attack.eps=0.05``); the study itself is only the two commands below.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import run, sets

# Smoke: the same two commands on a tiny synthetic set (140 training images), 1 epoch, 1 thread.
TINY = ["data.name=synthetic", "data.synthetic_size=200"]
SMOKE_PRETRAIN = [*TINY, "data.batch_size=32", "run.epochs=1", "attack.steps=1", "run.threads=1",
                  "run.progress=false"]
SMOKE_FINETUNE = ["finetune.epochs=1", "finetune.threads=1", "eval.steps=2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="new directory for the study")
    ap.add_argument("--smoke", action="store_true", help="1 epoch and a 2-step attack: checks the pipeline")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="pre-training override (repeatable)")
    args = ap.parse_args()
    out = Path(args.out)
    pre = SMOKE_PRETRAIN if args.smoke else []
    run(["pretrain", "--out", str(out / "pretrain"), *sets(pre + args.overrides)])
    run(["finetune", "--checkpoint", str(out / "pretrain"), "--protocol", "slf", "--out", str(out / "slf"),
         *sets(SMOKE_FINETUNE if args.smoke else [])])
    metrics = [json.loads(line) for line in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    results = {"pretrain": metrics[-1], "slf": json.loads((out / "slf" / "metrics.json").read_text())}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    slf = results["slf"]
    print(f"digits default: SLF test SA {slf['eval/standard_acc']:.3f} RA {slf['eval/robust_acc']:.3f} "
          f"({slf['eval/attack']}, eps {slf['eval/eps']}); {out / 'results.json'}")


if __name__ == "__main__":
    main()
