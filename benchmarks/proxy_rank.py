"""How well the per-epoch proxy ranks checkpoints compared with the full SLF protocol (digits).

Pre-trains a few digits runs (variants and attack strengths that give a spread of robustness),
keeps the encoder every few epochs, and evaluates each kept encoder twice: with the sweep's
proxy (quick linear probe, PGD-10 CE+CW on a validation subset) and with the full protocol
(SLF head, PGD-20 CE+CW on the whole validation split). Writes Spearman's rho and the timings to
``benchmarks/results/proxy_rank.{json,md}``.

    python benchmarks/proxy_rank.py                 # ~6 min on 2 CPU cores
    python benchmarks/proxy_rank.py --epochs 8 --every 4 --runs ds simclr   # quicker
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from acl_ray.algorithm.data import load_datasets
from acl_ray.algorithm.finetune import finetune_state
from acl_ray.algorithm.pretrain import Pretrainer
from acl_ray.algorithm.proxy import proxy_eval
from acl_ray.algorithm.runtime import set_threads
from acl_ray.config.pretrain import Config
from acl_ray.config.protocols import FinetuneConfig, ProxyConfig

RUNS = {
    "ds": {},
    "ds_eps0.03": {"attack.eps": 0.03},
    "a2s": {"model.variant": "a2s"},
    "simclr": {"model.variant": "simclr"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    set_threads(0)
    rows = []
    for name in args.runs:
        cfg = Config().override({**RUNS[name], "run.epochs": args.epochs, "run.progress": False})
        data = load_datasets(cfg.data)
        trainer = Pretrainer(cfg, data, torch.device("cpu"))
        while trainer.epoch < args.epochs:
            trainer.train_epoch()
            if trainer.epoch % args.every:
                continue
            t0 = time.perf_counter()
            proxy = proxy_eval(trainer.encoder, data, ProxyConfig(), seed=0)
            t1 = time.perf_counter()
            full = finetune_state(trainer.state_dict(), data, FinetuneConfig(), torch.device("cpu"))
            t2 = time.perf_counter()
            rows.append(
                {
                    "run": name,
                    "epoch": trainer.epoch,
                    "proxy/robust_acc": proxy["proxy/robust_acc"],
                    "val/robust_acc": full["val/robust_acc"],
                    "proxy_s": t1 - t0,
                    "full_s": t2 - t1,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    rho, p = spearmanr([r["proxy/robust_acc"] for r in rows], [r["val/robust_acc"] for r in rows])
    result = {
        "spearman_rho": float(rho),
        "p_value": float(p),
        "checkpoints": len(rows),
        "proxy_s_mean": sum(r["proxy_s"] for r in rows) / len(rows),
        "full_s_mean": sum(r["full_s"] for r in rows) / len(rows),
        "threads": torch.get_num_threads(),
        "args": vars(args),
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "proxy_rank.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Proxy vs full SLF protocol (digits, eps 0.1)",
        "",
        f"Spearman rho over {len(rows)} checkpoints: **{rho:.3f}** (p = {p:.2g}); "
        f"proxy {result['proxy_s_mean']:.1f} s vs full protocol {result['full_s_mean']:.1f} s per checkpoint "
        f"({result['threads']} threads).",
        "",
        "| run | epoch | proxy RA | full SLF val RA |",
        "| --- | --- | --- | --- |",
        *[
            f"| {r['run']} | {r['epoch']} | {r['proxy/robust_acc']:.3f} | {r['val/robust_acc']:.3f} |"
            for r in rows
        ],
    ]
    (out / "proxy_rank.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]))


if __name__ == "__main__":
    main()
