"""The suite runs on two pytest-xdist workers (``./dev test``: ``-n 2 --dist loadgroup``).

The test modules that start Ray (a local cluster, a sweep, a Ray Train run, a script that does) are
in two groups of about equal length; a group's tests run one after another on one worker. So at most
two local Ray clusters run at once (each on its own ports and session folder, each counting the
machine's CPUs as its own: their trials share the cores, which the tests must and do survive: they
wait for events, not moments). Every other test runs beside them. The groups are chosen here by
module path, on the controller: xdist's own ``xdist_group`` mark renames test ids on the workers,
which pytest 9 no longer lets it do.
"""

from typing import Any

import pytest

# Modules whose tests start Ray, by group (measured seconds on a 2-core machine in the comments);
# the other orchestration modules test pure functions.
RAY_GROUPS = {
    "tests/orchestration/test_node_loss.py": "ray-a",  # 250
    "tests/orchestration/test_tune_resume.py": "ray-a",  # 130
    "tests/test_experiments.py": "ray-a",  # 130
    "tests/test_cli.py": "ray-a",  # 20
    "tests/orchestration/test_ray_train_resume.py": "ray-b",  # 110
    "tests/orchestration/test_sweep_console.py": "ray-b",  # 105
    "tests/test_search_quality.py": "ray-b",  # 95
    "tests/orchestration/test_ray_train.py": "ray-b",  # 60
    "tests/orchestration/test_tune.py": "ray-b",  # 60
    "tests/orchestration/test_confirm.py": "ray-b",  # 50
    "tests/orchestration/test_population.py": "ray-a",  # 50
}


def ray_group(nodeid: str) -> str:
    """The scheduling unit of a test: its Ray group, or the test itself."""
    return RAY_GROUPS.get(nodeid.split("::", 1)[0], nodeid)


# tryfirst: before xdist's own LoadGroupScheduling; optionalhook: plain pytest has no xdist hooks
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    gone = sorted(m for m in RAY_GROUPS if not (config.rootpath / m).is_file())
    if gone:  # a renamed module would silently leave its group
        raise pytest.UsageError(f"tests/conftest.py RAY_GROUPS lists missing files: {', '.join(gone)}")
    from xdist.scheduler import LoadGroupScheduling

    class RayGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ray_group(nodeid)

    return RayGroupScheduling(config, log)
