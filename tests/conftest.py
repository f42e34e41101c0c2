"""The suite runs on two pytest-xdist workers (``./dev test``: ``-n 2 --dist loadgroup``).

Every test that starts Ray (a local cluster, a sweep, a Ray Train run, a benchmark that does) is in
one xdist group, so those run one after another on one worker and never two Ray clusters at once
(ports, object-store memory, CPUs that Ray counts as its own). Everything else runs on the other
worker meanwhile. Without xdist (``python -m pytest`` alone) the marks do nothing.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
# Modules whose tests start Ray: the folder of the orchestration layer, and the scripts run end to end.
RAY_PATHS = ("orchestration", "test_experiments.py", "test_search_quality.py", "test_cli.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.path)).resolve().relative_to(ROOT)
        if rel.parts[0] in RAY_PATHS:
            item.add_marker(pytest.mark.xdist_group("ray"))
