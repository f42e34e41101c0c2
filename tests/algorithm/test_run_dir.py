import json

import pytest

from acl_ray.algorithm.run_dir import METRICS, prepare_run_dir, read_metrics, require_empty
from acl_ray.config.pretrain import Config


def test_require_empty_accepts_missing_and_empty_folders(tmp_path) -> None:
    assert require_empty(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert require_empty(str(tmp_path / "empty")) == tmp_path / "empty"


@pytest.mark.parametrize("hint", ["choose another --out", "use --resume or another --out"])
def test_require_empty_refuses_a_folder_with_files_in_one_line(tmp_path, hint) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(ValueError, match=f"Output directory .* is not empty: {hint}$") as e:
        require_empty(tmp_path, hint)
    assert "\n" not in str(e.value)


def test_a_new_run_refuses_a_non_empty_folder(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="is not empty: choose another --out"):
        prepare_run_dir(tmp_path, Config(), resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_metrics_of_a_running_run_leave_out_the_row_being_written(tmp_path) -> None:
    assert read_metrics(tmp_path) == []
    rows = [{"epoch": 1, "train/loss": 4.0}, {"epoch": 2, "train/loss": 3.5}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    for cut in range(len(text) + 1):  # every moment of the writes
        (tmp_path / METRICS).write_text(text[:cut])
        got = read_metrics(tmp_path)
        assert got == rows[: text[:cut].count("\n")]
