"""util/atomic.py: whole files or nothing, with the permissions `open` would give them."""

import json
import os
import stat

import numpy as np
import pytest

from bert.tasks import glue
from util import atomic


@pytest.fixture
def umask():
    """Sets the process's umask for one test."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_and_predictions_honour_the_umask(umask, tmp_path, mask, want):
    umask(mask)
    atomic.write_json(tmp_path / "eval_results.json", {"accuracy": 0.5})
    examples = [glue.Example(f"test.tsv:{i}", "a film", None, None, str(i)) for i in (1, 2)]
    glue.write_submission(tmp_path / "SST-2.tsv", "sst2", examples, np.array([0, 1]))
    with open(tmp_path / "reference", "w"):
        pass
    assert mode(tmp_path / "reference") == want
    assert mode(tmp_path / "eval_results.json") == want
    assert mode(tmp_path / "SST-2.tsv") == want


def test_an_explicit_mode_wins(umask, tmp_path):
    umask(0o077)
    atomic.write_atomically(tmp_path / "shared.txt", "x", mode=0o644)
    assert mode(tmp_path / "shared.txt") == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.open_atomically(target) as f:
        f.write(b"partial")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_non_finite_results_are_strings_in_strict_json(tmp_path):
    """JSON has no inf or nan: a results file with them stays readable by strict parsers."""
    values = {"loss": float("inf"), "low": -float("inf"), "f1": float("nan"), "ok": [0.5, 1]}
    atomic.write_json(tmp_path / "eval_results.json", values)

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    text = (tmp_path / "eval_results.json").read_text()
    assert json.loads(text, parse_constant=refuse) == {
        "loss": "inf", "low": "-inf", "f1": "nan", "ok": [0.5, 1]
    }  # fmt: skip
