"""A remote Tune experiment (here a file:// URI) read through a local copy of its small files."""

import shutil
from pathlib import Path

from acl_ray.orchestration.experiment import local_experiment
from acl_ray.results.trials import read_trials

DATA = Path(__file__).resolve().parents[1] / "results" / "data"


def test_a_uri_is_read_from_a_copy_without_checkpoints(tmp_path) -> None:
    remote = Path(shutil.copytree(DATA / "sweep_sw1", tmp_path / "bucket" / "sw1"))
    (remote / "trial-e52eb644" / "checkpoint_1").mkdir(parents=True)
    (remote / "trial-e52eb644" / "checkpoint_1" / "checkpoint.pt").write_bytes(b"weights")
    with local_experiment(remote.as_uri()) as local:
        assert local != remote
        copied = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
        assert not any("checkpoint" in p for p in copied)
        assert sum(p.startswith("experiment_state-") for p in copied) == 1
        assert sum(p.endswith("/result.json") for p in copied) == 3
        trials = read_trials(local)
    assert not local.exists()  # the copy is temporary
    want = read_trials(remote)
    assert [(t.trial_id, t.status, t.config, t.results) for t in trials] == [
        (t.trial_id, t.status, t.config, t.results) for t in want
    ]


def test_a_local_path_is_read_in_place(tmp_path) -> None:
    with local_experiment(str(tmp_path)) as local:
        assert local == tmp_path
