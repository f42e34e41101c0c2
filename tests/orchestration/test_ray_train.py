"""Ray Train wrapper on a small local cluster: fault recovery and resource checks."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.util.state import list_actors

from acl_ray.algorithm.run_dir import read_metrics
from acl_ray.cli import main
from acl_ray.config.pretrain import Config
from acl_ray.orchestration.ray_train import check_request, cluster_check, run_pretrain_ray


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2)  # never a cluster another process started here
    yield
    ray.shutdown()


def rows(out: Path) -> list[dict]:
    return read_metrics(out)  # a row being written is not there yet


def wait_for(cond, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        time.sleep(0.2)


def test_killed_worker_restarts_from_the_last_checkpoint(cluster, tmp_path) -> None:
    out = tmp_path / "run"
    cfg = Config().override({"run.epochs": 5, "run.progress": False})
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(rows=run_pretrain_ray(cfg, out, 2, max_failures=2)))
    t.start()
    wait_for(lambda: len(rows(out)) >= 3)
    before = rows(out)
    alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    workers = list_actors(address=ray.get_runtime_context().gcs_address, filters=alive)  # this cluster's
    assert len(workers) == 2
    os.kill(workers[-1].pid, signal.SIGKILL)  # one worker process dies mid-run
    t.join(timeout=400)
    assert not t.is_alive() and "rows" in result
    final = rows(out)
    assert [r["epoch"] for r in final] == [1, 2, 3, 4, 5] == [r["epoch"] for r in result["rows"]]
    first_pid = before[0]["worker/pid"]
    kept = [r for r in final if r["worker/pid"] == first_pid]
    # Epochs up to the checkpoint Ray had registered are kept, not redone; at most the one whose
    # report was still in flight at the kill is trained again.
    assert len(kept) >= len(before) - 1 and [r["epoch"] for r in kept] == list(range(1, len(kept) + 1))
    assert final[-1]["worker/pid"] != first_pid  # the group was restarted
    assert final[-1]["train/loss"] < final[0]["train/loss"]


def test_resources_the_cluster_cannot_give_fail_before_fit(cluster) -> None:
    with pytest.raises(ValueError, match=r"needs 3 CPU \(have 2\)"):
        cluster_check(3, 1, 0)
    with pytest.raises(ValueError, match=r"needs 2 GPU \(have 0\)"):
        cluster_check(2, 1, 1)
    cluster_check(2, 1, 0)  # fits


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, 0, 128), "--workers=0"),
        ((-2, 1, 0, 128), "--workers=-2"),
        ((3, 1, 0, 128), "divisible"),
        ((2, 0, 0, 128), "--cpus-per-worker"),
        ((2, 1, -1, 128), "--gpus-per-worker"),
    ],
)
def test_bad_worker_requests(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_request(*args)


def test_cli_rejects_bad_workers_before_starting_ray(tmp_path, capsys) -> None:
    assert main(["pretrain", "--workers", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--workers=0" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()
