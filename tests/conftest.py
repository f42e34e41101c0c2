"""The suite runs on two pytest-xdist workers (``./dev test``: ``-n 2 --dist loadgroup``).

The tests that start Ray (a local cluster, a sweep, a Ray Train run, a script that does) are one
scheduling group: they run one after another on one worker, never two Ray clusters at once. (Two
groups side by side were no faster on 2 cores: each cluster counts every CPU as its own and their
trials fought for them.) Every other test runs on the other worker meanwhile. On 2 cores both halves
are CPU-bound, so the suite costs about their sum (README "What the suite costs"); with more cores
the other half overlaps. The group is chosen here by test id, on the controller: xdist's own
``xdist_group`` mark renames test ids on the workers, which pytest 9 no longer lets it do.
"""

import os
from typing import Any

import pytest

# Every local Ray the tests start (in process or in a script they run) comes up without Ray's
# dashboard: about 4 s less per start and a share of a core less while it runs, over some 20 starts.
# (test_netns_cluster's cluster, started with `ray start`, keeps the head's: job submission and the
# state API a resumed sweep reads need it.)
os.environ["ACL_RAY_DASHBOARD"] = "0"

# Test ids (a module, or module::test-name prefix) that start Ray, in the order they run; seconds
# alone on a 2-core machine. They run first, so the other worker's tests overlap the early ones, and
# test_netns_cluster last: its cluster of a head and 3 worker nodes in network namespaces starts
# some 20 Ray processes and its sweep restarts a worker group, which beside the other worker's tests
# would slow both (as test_node_loss's simulated 5-node cluster did: 450 s beside them, 220 s alone,
# before the netns sweep replaced it); by then the other worker has finished. The other
# orchestration modules test pure functions.
RAY = (
    "tests/orchestration/test_tune.py",  # 50
    "tests/orchestration/test_population.py",  # 40
    "tests/orchestration/test_confirm.py",  # 35
    "tests/orchestration/test_ray_train.py",  # 10
    "tests/orchestration/test_sweep_console.py",  # 75
    "tests/orchestration/test_tune_resume.py",  # 130
    "tests/orchestration/test_ray_train_resume.py",  # 140
    "tests/test_search_quality.py::test_smoke",  # 75
    "tests/test_experiments.py::test_later_methods_sweep_smoke",  # 60
    "tests/test_experiments.py::test_sweep_cifar10_cluster_smoke",  # 30
    "tests/orchestration/test_netns_cluster.py",  # 267 at load 4-17: cluster 39, sweep 197
)


def ray_index(nodeid: str) -> int | None:
    """The position in RAY of a test that starts Ray, else None."""
    return next(
        (i for i, r in enumerate(RAY) if nodeid == r or nodeid.startswith((r + "::", r + "_"))), None
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start Ray first, in RAY's order; every other test after them, as collected."""
    items.sort(key=lambda item: (0, i) if (i := ray_index(item.nodeid)) is not None else (1, 0))


def ray_group(nodeid: str) -> str:
    """The scheduling unit of a test: ``"ray"`` for a test that starts Ray, else the test itself."""
    return "ray" if ray_index(nodeid) is not None else nodeid


# tryfirst: before xdist's own LoadGroupScheduling; optionalhook: plain pytest has no xdist hooks
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    gone = sorted(r for r in RAY if not (config.rootpath / r.split("::")[0]).is_file())
    if gone:  # a renamed module would silently leave the group
        raise pytest.UsageError(f"tests/conftest.py RAY lists missing files: {', '.join(gone)}")
    from xdist.scheduler import LoadGroupScheduling

    class RayGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ray_group(nodeid)

    return RayGroupScheduling(config, log)


@pytest.fixture
def local_ray() -> Any:
    """One quiet local Ray for a test that runs several sweeps in its own process (each would start and
    stop one of its own otherwise: seconds each on 2 cores)."""
    import ray

    from acl_ray.orchestration.ray_train import ensure_ray

    started = ensure_ray(None, quiet=True)
    yield
    if started:
        ray.shutdown()
