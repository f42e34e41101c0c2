"""Ray Train wrapper: resource checks on a small local cluster and bad worker requests. (Fault
recovery: test_ray_train_resume.py.)"""

import pytest

from acl_ray.cli import main
from acl_ray.orchestration.ray_train import DASHBOARD_ENV, check_request, cluster_check, local_dashboard


def test_resources_the_cluster_cannot_give_fail_before_fit(local_ray) -> None:  # 2 CPUs, no GPU
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


def test_the_dashboard_switch_reads_0_or_1_and_names_itself_otherwise(monkeypatch) -> None:
    monkeypatch.delenv(DASHBOARD_ENV, raising=False)
    assert local_dashboard() is True  # a user's local Ray gets the dashboard
    monkeypatch.setenv(DASHBOARD_ENV, "0")
    assert local_dashboard() is False
    monkeypatch.setenv(DASHBOARD_ENV, "off")
    with pytest.raises(ValueError, match=r"ACL_RAY_DASHBOARD='off': must be 0 \(no dashboard\) or 1"):
        local_dashboard()
