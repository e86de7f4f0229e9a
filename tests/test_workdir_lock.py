"""util/workdir_lock.py in this process: one job per workdir, and a workdir that is a file is
one line (the lock held across processes and a killed holder: tests/test_faults.py)."""

import pytest

from util import workdir_lock
from util.errors import UserError


def test_a_second_hold_is_refused_and_a_file_is_no_workdir(tmp_path):
    busy = r"--workdir=.*run is in use by another job \(host "
    with (
        workdir_lock.hold(tmp_path / "run"),
        pytest.raises(UserError, match=busy),
        workdir_lock.hold(tmp_path / "run"),
    ):
        pass
    with workdir_lock.hold(tmp_path / "run"):  # released at the end of the block
        pass
    (tmp_path / "file").write_text("x")
    a_file = r"^--workdir=.*file is a file, not a folder"
    with pytest.raises(UserError, match=a_file), workdir_lock.hold(tmp_path / "file"):
        pass
    assert (tmp_path / "file").read_text() == "x"
