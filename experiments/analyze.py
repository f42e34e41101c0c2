"""Analyse a sweep folder: ``python experiments/analyze.py DIR [--select knee]`` (= ``acl-ray analyze``).

Writes DIR/analysis/ (trials.parquet, epochs.parquet, plots, importance, best_config.yaml, report.md).
"""

import sys

from acl_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["analyze", *sys.argv[1:]]))
