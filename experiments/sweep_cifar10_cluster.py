"""The CIFAR-10 sweep on a GPU cluster: ACL-DS knobs tuned by TPE + ASHA (configs/sweep_cifar10.yaml).

On the head of a cluster started with ``ray up cluster.yaml`` (set ``sweep.storage`` in the
YAML, or pass ``--set sweep.storage=s3://BUCKET/PREFIX``, first)::

    ray submit cluster.yaml experiments/sweep_cifar10_cluster.py -- --out /home/ray/sweeps/c10 --gpus 4
    python experiments/sweep_cifar10_cluster.py --out /tmp/c10 --smoke     # ~1 min: 1 synthetic trial

``--gpus N`` asks the autoscaler for N GPU workers and waits until they have joined: the sweep sizes
its concurrency from the resources present when it starts
(``acl_ray.orchestration.resources.concurrency``), and an autoscaling cluster starts with no GPU
node. Any other ``acl-ray sweep`` flag is passed on (``--set sweep.num_samples=64``, ``--resume
DIR``). ``--smoke`` runs one tiny trial on synthetic data with the small CNN on a local Ray (no
cluster), through the same sweep file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import acl_ray.cli
from acl_ray.cli import main as acl_ray_main

# Next to this script in the repository; `ray submit` copies the script alone to the head's home
# directory, so fall back to the repository the package is installed from (pip install -e there).
_HERE = Path(__file__).resolve().parent.parent / "configs" / "sweep_cifar10.yaml"
_INSTALLED = Path(acl_ray.cli.__file__).resolve().parent.parent / "configs" / "sweep_cifar10.yaml"
CONFIG = _HERE if _HERE.exists() else _INSTALLED
SMOKE = [
    "data.name=synthetic", "data.synthetic_size=1000", "data.augment=auto", "model.arch=small_cnn",
    "run.epochs=1", "run.threads=1", "optim.warmup_epochs=0",
    "sweep.num_samples=1", "sweep.gpus_per_worker=0", "sweep.cpus_per_worker=1", "sweep.proxy_every=1",
    "sweep.storage=", "proxy.train_size=100", "proxy.val_size=50", "proxy.epochs=2", "proxy.steps=2",
    "final.epochs=1", "final.threads=1", "eval.steps=2",
]


def wait_for_gpus(address: str, gpus: int, cpus_per_gpu: float, timeout_s: float) -> None:
    """Request ``gpus`` one-GPU bundles from the autoscaler and wait until the cluster has them."""
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address=address)  # acl_ray.orchestration.tune reuses this connection
    request_resources(bundles=[{"GPU": 1, "CPU": cpus_per_gpu}] * gpus)
    start = time.monotonic()
    while (have := ray.cluster_resources().get("GPU", 0)) < gpus:
        if time.monotonic() - start > timeout_s:
            sys.exit(f"only {have:g} of {gpus} GPUs joined in {timeout_s:g} s: see `ray status`")
        print(f"waiting for GPU workers: {have:g}/{gpus}", flush=True)
        time.sleep(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="one tiny synthetic trial on a local Ray")
    ap.add_argument("--out", help="sweep folder (default: runs/sweep_cifar10-<time>)")
    ap.add_argument("--address", default="auto", help="Ray cluster (default: auto, the cluster this runs on)")
    ap.add_argument("--gpus", type=int, default=0, help="wait for this many GPU workers before starting")
    ap.add_argument("--cpus-per-gpu", type=float, default=3.0, help="CPUs per requested GPU bundle")
    ap.add_argument("--wait-timeout", type=float, default=1800.0, help="seconds to wait for the GPUs")
    args, rest = ap.parse_known_args()
    argv = ["sweep", *rest]
    if "--resume" not in rest:
        out = args.out or f"runs/sweep_cifar10-{time.strftime('%Y%m%d-%H%M%S')}"
        argv += ["--out", out] + ([] if "--config" in rest else ["--config", str(CONFIG)])
    if args.smoke:  # local Ray, appended last so they win over the file
        argv += [a for v in SMOKE for a in ("--set", v)]
    else:
        argv += ["--address", args.address]
        if args.gpus:
            wait_for_gpus(args.address, args.gpus, args.cpus_per_gpu, args.wait_timeout)
    print("acl-ray " + " ".join(argv), flush=True)
    code = acl_ray_main(argv)
    if args.gpus and not args.smoke:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[])  # let the autoscaler release idle GPU nodes again
    sys.exit(code)


if __name__ == "__main__":
    main()
