"""The suite runs on two pytest-xdist workers (``./dev test``: ``-n 2 --dist loadgroup``).

The tests that start Ray (a local cluster, a sweep, a Ray Train run, a script that does) are two
scheduling groups, each run in order on one worker. The first, RAY, starts at once on one worker
while every other test runs on the other; the second, RAY_LATE, is queued after every other test, so
it starts on that worker once its tests are done and runs beside the rest of the first. The Ray
tests spend most of their time waiting (processes starting, Tune's and Train's polling: a confirm
sweep alone used 28 CPU s in 62 s), so two of them side by side overlap well; the tests without Ray
are CPU-bound, and a Ray cluster beside them runs twice as slowly (README "What the suite costs").
The group is chosen here by test id, on the controller: xdist's own ``xdist_group`` mark renames
test ids on the workers, which pytest 9 no longer lets it do.
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
# alone on a 2-core machine. The other orchestration modules test pure functions.
RAY = (
    "tests/orchestration/test_tune.py",  # 50
    "tests/orchestration/test_population.py",  # 40
    "tests/orchestration/test_confirm.py",  # 35
    "tests/orchestration/test_ray_train.py",  # 10
    "tests/orchestration/test_sweep_console.py",  # 75
    "tests/orchestration/test_tune_resume.py",  # 200 on one core: Ctrl-C 98, killed driver 57, trial 43
    "tests/orchestration/test_ray_train_resume.py",  # 140
    "tests/test_search_quality.py::test_smoke",  # 75
)
# Started once every test without Ray is done: test_netns_cluster's cluster of a head and 3 worker
# nodes in network namespaces starts some 20 Ray processes and its sweep restarts a worker group,
# which beside the CPU-bound tests would slow both (as test_node_loss's simulated 5-node cluster
# did: 450 s beside them, 220 s alone, before the netns sweep replaced it).
RAY_LATE = (
    "tests/test_experiments.py::test_later_methods_sweep_smoke",  # 60
    "tests/test_experiments.py::test_sweep_cifar10_cluster_smoke",  # 30
    "tests/orchestration/test_netns_cluster.py",  # 267 at load 4-17: cluster 39, sweep 197
)


def index_in(ids: tuple[str, ...], nodeid: str) -> int | None:
    """The position in ``ids`` of the entry a test id falls under, else None."""
    return next(
        (i for i, r in enumerate(ids) if nodeid == r or nodeid.startswith((r + "::", r + "_"))), None
    )


def ray_index(nodeid: str) -> int | None:
    """The position among RAY + RAY_LATE of a test that starts Ray, else None."""
    i, late = index_in(RAY, nodeid), index_in(RAY_LATE, nodeid)
    return i if i is not None else None if late is None else len(RAY) + late


def order(nodeid: str) -> tuple[int, int]:
    """RAY's tests first, every test without Ray next (as collected), RAY_LATE's last."""
    i = ray_index(nodeid)
    return (1, 0) if i is None else (0, i) if i < len(RAY) else (2, i)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In that order; inside RAY, the tests that share ``local_ray`` first, one after the other."""
    def key(item: pytest.Item) -> tuple[int, bool, int]:
        group, i = order(item.nodeid)
        return group, "local_ray" not in item.fixturenames, i

    items.sort(key=key)


def ray_group(nodeid: str) -> str:
    """The scheduling unit of a test: ``"ray"`` or ``"ray-late"`` for one that starts Ray, else the test
    itself. xdist hands a worker more only when it has 2 tests or fewer left, so RAY's worker keeps it
    to itself, and RAY_LATE, last in the queue, goes to the other worker after its tests."""
    return {0: "ray", 1: nodeid, 2: "ray-late"}[order(nodeid)[0]]


# tryfirst: before xdist's own LoadGroupScheduling; optionalhook: plain pytest has no xdist hooks
@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    gone = sorted(r for r in RAY + RAY_LATE if not (config.rootpath / r.split("::")[0]).is_file())
    if gone:  # a renamed module would silently leave the group
        raise pytest.UsageError(f"tests/conftest.py RAY lists missing files: {', '.join(gone)}")
    from xdist.scheduler import LoadGroupScheduling

    # the queue in collection order (xdist would put the groups with most tests first: RAY_LATE too)
    config.option.loadscopereorder = False

    class RayGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ray_group(nodeid)

    return RayGroupScheduling(config, log)


@pytest.fixture
def local_ray() -> None:
    """A quiet local Ray of 2 CPUs for a test that runs sweeps in its own process, shared with the
    tests right after it that ask for one too (they run in a row: pytest_collection_modifyitems), and
    stopped after the last of them (pytest_runtest_teardown): a start and a stop cost 7 s here."""
    from acl_ray.orchestration.ray_train import ensure_ray

    ensure_ray(None, num_cpus=2, quiet=True)  # nothing to do while the previous test's is up


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    done = yield  # the test's fixtures torn down first
    if "local_ray" in item.fixturenames and (nextitem is None or "local_ray" not in nextitem.fixturenames):
        import ray

        ray.shutdown()
    return done
