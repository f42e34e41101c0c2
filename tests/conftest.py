"""The suite runs on two pytest-xdist workers (``./dev test``: ``-n 2 --dist loadgroup``).

The test modules that start Ray (a local cluster, a sweep, a Ray Train run, a script that does) are
one group: they run one after another on one worker, never two Ray clusters at once (ports,
object-store memory, CPUs that Ray counts as its own), and every other test runs beside them on the
other worker. The group is chosen here by module path, on the controller: xdist's own
``xdist_group`` mark renames test ids on the workers, which pytest 9 no longer lets it do.
"""

from typing import Any

import pytest

# Modules whose tests start Ray; the other orchestration modules test pure functions.
RAY_MODULES = frozenset(
    f"tests/{m}.py"
    for m in (
        "orchestration/test_confirm", "orchestration/test_node_loss", "orchestration/test_population",
        "orchestration/test_ray_train", "orchestration/test_ray_train_resume",
        "orchestration/test_sweep_console", "orchestration/test_tune", "orchestration/test_tune_resume",
        "test_experiments", "test_search_quality", "test_cli",
    )
)


def ray_group(nodeid: str) -> str:
    """The scheduling unit of a test: ``"ray"`` for a test of a module that starts Ray, else itself."""
    return "ray" if nodeid.split("::", 1)[0] in RAY_MODULES else nodeid


# tryfirst: before xdist's own LoadGroupScheduling; optionalhook: plain pytest has no xdist hooks
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    gone = sorted(m for m in RAY_MODULES if not (config.rootpath / m).is_file())
    if gone:  # a renamed module would silently leave the group
        raise pytest.UsageError(f"tests/conftest.py RAY_MODULES lists missing files: {', '.join(gone)}")
    from xdist.scheduler import LoadGroupScheduling

    class RayGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ray_group(nodeid)

    return RayGroupScheduling(config, log)

