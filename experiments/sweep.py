"""The default sweep: ACL-DS on the embedded digits set, local Ray, CPU, TPE + ASHA.

    python experiments/sweep.py                      # writes runs/sweep-<timestamp>/
    python experiments/sweep.py --out DIR --set sweep.num_samples=16
    python experiments/sweep.py --verbose            # Ray's worker output in the terminal too

Any ``acl-ray sweep`` flag works here; this file only chooses the study's settings
(configs/sweep_digits.yaml) and an output folder.
"""

import sys
import time
from pathlib import Path

from acl_ray.cli import main

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sweep_digits.yaml"

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--resume" not in args:
        if "--out" not in args:
            args += ["--out", f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}"]
        if "--config" not in args:
            args += ["--config", str(CONFIG)]
    sys.exit(main(["sweep", *args]))
