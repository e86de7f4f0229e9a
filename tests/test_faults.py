"""Faults: a run killed anywhere resumes to the same parameters, a damaged checkpoint is moved
aside and the one before it resumed, a second job on a workdir is refused, and a full disk
stops a run with the earlier checkpoints intact."""

import glob
import hashlib
import json
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_pretrain_job import ROOT, environment, job_args, pretrain_config, with_prepared_data

from bert.jobs import pretrain
from bert.training import checkpoints
from util.errors import UserError

pytestmark = pytest.mark.full  # the full tier (tests/conftest.py)


# SIGKILLs of a run, the second inside a checkpoint save: the first and the third after some
# steps, the third resuming from the checkpoint that the kill inside a save left newest
KILLS = 3
# Steps of a killed run: beyond what its attempts reach (at most 6 steps and 0.2 s after a
# resume, or the next save, each: about 15 steps in all), so that every attempt is killed before
# the run ends.
TOTAL = 30


def leaves(workdir: pathlib.Path, step: int | None = None) -> list[np.ndarray]:
    params, _ = checkpoints.load_params(workdir, step)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def assert_same_params(got: pathlib.Path, want: pathlib.Path) -> None:
    a, b = leaves(got), leaves(want)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def saving(workdir: pathlib.Path) -> bool:
    """Whether an Orbax save is in progress (its temporary step folder exists)."""
    return bool(glob.glob(str(workdir / "checkpoints" / "*.orbax-checkpoint-tmp*")))


def newest_step(workdir: pathlib.Path) -> int | None:
    """The newest finished checkpoint (a save in progress is a temporary folder until it ends)."""
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=None)


def steps_logged(log: pathlib.Path, total: int) -> int:
    return len(re.findall(rf"step \d+/{total}\b", log.read_text(errors="replace")))


def wait_for(predicate, process, timeout=300) -> bool:
    """Polls `predicate` until it holds (True) or the process ends or time runs out (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def kill_at_random(args, workdir: pathlib.Path, total: int, seed: int, kills: int = KILLS):
    """Starts the job `kills` times, each time SIGKILLed at a seeded random moment: inside a
    checkpoint save (every second), or a random 0-0.2 s after its 3rd-6th step (by its 5th step
    the save of its 2nd has completed: each save waits for the one before, so the run moves
    on); then runs it to the end. A start killed after its steps must have resumed from the
    newest finished checkpoint the kill before left. Returns the number of kills that hit a
    save in progress."""
    rng = random.Random(seed)
    log_path = workdir.parent / f"{workdir.name}.log"
    in_save = 0
    for attempt in range(kills):
        newest = newest_step(workdir) if attempt else None
        with open(log_path, "w") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=environment(1), stdout=log, stderr=log)
            try:
                if attempt % 2 == 1:
                    hit = wait_for(lambda: saving(workdir), process)
                else:
                    after = rng.randint(3, 6)
                    hit = wait_for(lambda a=after: steps_logged(log_path, total) >= a, process)
                    time.sleep(rng.uniform(0, 0.2))
                in_save += saving(workdir)
                assert hit and process.poll() is None, log_path.read_text()[-3000:]
            finally:
                process.kill()
                process.wait()
        if newest is not None and attempt % 2 == 0:  # killed after its steps were logged
            assert f"resumed from step {newest}" in log_path.read_text(), (attempt, newest)
    result = subprocess.run(args, cwd=ROOT, env=environment(1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return in_save


def test_pretraining_killed_at_random_moments_ends_bitwise_as_uninterrupted(
    shared_data, prepared_wiki, tmp_path
):
    total = TOTAL
    settings = {"train.checkpoint_every": 2, "train.max_to_keep": 2, "train.log_every": 1}
    # uninterrupted, and saved only at its end
    reference = with_prepared_data(prepared_wiki, tmp_path / "reference")
    once = {**settings, "train.checkpoint_every": total}
    result = subprocess.run(job_args(shared_data, reference, total, **once), cwd=ROOT,
                            env=environment(1), capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    killed = with_prepared_data(prepared_wiki, tmp_path / "killed")
    args = job_args(shared_data, killed, total, **settings)
    assert kill_at_random(args, killed, total, seed=14) >= 1
    assert checkpoints.load_params(killed)[1]["step"] == total
    assert_same_params(killed, reference)


def glue_args(shared_data, tiny_hf, workdir, steps, **overrides):
    flags = {
        "init_from": tiny_hf,
        "data_dir": shared_data / "glue" / "SST-2",
        "train_limit": 64,
        "eval_limit": 16,
        "eval_batch_size": 16,
        "max_seq_length": 32,
        "train.batch_size": 16,
        "train.steps": steps,
        "train.log_every": 1,
        "train.checkpoint_every": 2,
        "train.max_to_keep": 2,
        **overrides,
    }
    return [sys.executable, str(ROOT / "main.py"), "--config=configs/glue.py:task=sst2",
            f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())]  # fmt: skip


def test_fine_tuning_killed_at_random_moments_ends_bitwise_as_uninterrupted(
    shared_data, tiny_hf, tmp_path
):
    total = TOTAL
    reference = tmp_path / "reference"  # uninterrupted, and saved only at its end
    once = glue_args(shared_data, tiny_hf, reference, total, **{"train.checkpoint_every": total})
    result = subprocess.run(once, cwd=ROOT, env=environment(1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    killed = tmp_path / "killed"
    assert kill_at_random(glue_args(shared_data, tiny_hf, killed, total), killed, total, 41) >= 1
    assert checkpoints.load_params(killed)[1]["step"] == total
    assert_same_params(killed, reference)
    assert (killed / "eval_results.json").read_text() == (
        reference / "eval_results.json"
    ).read_text()


SMALL = {"train.checkpoint_every": 2, "train.max_to_keep": 3, "train.async_checkpoints": False}


@pytest.fixture(scope="module")
def six_steps(shared_data, prepared_wiki, tmp_path_factory):
    """(a workdir with checkpoints 2, 4 and 6; its continuation to step 8 from step 4)."""
    base = with_prepared_data(prepared_wiki, tmp_path_factory.mktemp("six"))
    pretrain.run(pretrain_config(shared_data, base, 6, **SMALL), str(base))
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == ["2", "4", "6"]
    reference = tmp_path_factory.mktemp("from4")
    shutil.copytree(base, reference, dirs_exist_ok=True)
    shutil.rmtree(reference / "checkpoints" / "6")
    pretrain.run(pretrain_config(shared_data, reference, 8, **SMALL), str(reference))
    return base, reference


def biggest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def flip_bytes(step_dir: pathlib.Path) -> None:
    path = biggest_array_file(step_dir)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def remove_file(step_dir: pathlib.Path) -> None:
    biggest_array_file(step_dir).unlink()


def truncate_file(step_dir: pathlib.Path) -> None:
    path = biggest_array_file(step_dir)
    os.truncate(path, path.stat().st_size // 2)


def remove_commit_marker(step_dir: pathlib.Path) -> None:
    (step_dir / checkpoints.COMMIT_MARKER).unlink()


@pytest.mark.parametrize(
    "damage, why",
    [
        # Flipped bytes decode to other numbers (the checksum tells) or fail zstd's checks.
        (flip_bytes, "differs from its checksum|Error reading"),
        (remove_file, "Error reading"),
        (truncate_file, "Error reading"),
        (remove_commit_marker, "no commit_success.txt"),
    ],
)
def test_damaged_newest_checkpoint_is_moved_aside_and_the_one_before_resumed(
    damage, why, shared_data, six_steps, tmp_path, caplog
):
    base, reference = six_steps
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    damage(tmp_path / "checkpoints" / "6")
    damaged_files = sorted(p.name for p in (tmp_path / "checkpoints" / "6").rglob("*"))
    caplog.set_level(logging.INFO)
    results = pretrain.run(pretrain_config(shared_data, tmp_path, 8, **SMALL), str(tmp_path))
    assert results["step"] == 8
    (warning,) = [r.getMessage() for r in caplog.records if "does not restore" in r.getMessage()]
    assert "/checkpoints/6 does not restore" in warning and re.search(why, warning), warning
    assert "TensorStore" not in warning and "\n" not in warning, warning
    assert "resuming from step 4" in warning and "resumed from step 4" in caplog.text
    kept = tmp_path / "checkpoints_damaged" / "6"  # kept aside, as it was
    assert sorted(p.name for p in kept.rglob("*")) == damaged_files
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "6", "8"]
    assert_same_params(tmp_path, reference)


def test_when_no_checkpoint_restores_one_error_lists_them_and_nothing_moves(
    shared_data, six_steps, tmp_path
):
    base, _ = six_steps
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    flip_bytes(tmp_path / "checkpoints" / "6")
    for path in (tmp_path / "checkpoints" / "4" / "state").glob("ocdbt.process_*/d/*"):
        path.unlink()  # every file of array data: the parameters' too
    remove_commit_marker(tmp_path / "checkpoints" / "2")
    with pytest.raises(UserError) as error:
        pretrain.run(pretrain_config(shared_data, tmp_path, 8, **SMALL), str(tmp_path))
    message = str(error.value)
    assert "no checkpoint restores" in message and "\n" not in message, message
    for step, why in [(6, "(checksum|Error reading)"), (4, "Error reading"), (2, "commit_success")]:
        assert re.search(rf"step {step}: [^;]*{why}", message), (step, message)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4", "6"]
    assert not (tmp_path / "checkpoints_damaged").exists()


def truncate_arrays(step_dir: pathlib.Path) -> None:
    """Every file of array data cut to half its size."""
    for path in (step_dir / "state").glob("ocdbt.process_*/d/*"):
        os.truncate(path, path.stat().st_size // 2)


def file_digests(directory: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}  # fmt: skip


def resume_in_main(shared_data, workdir: pathlib.Path, steps: int) -> tuple[int, list[str]]:
    """(exit code, the non-empty lines of stdout and stderr together) of main.py resuming."""
    result = subprocess.run(
        job_args(shared_data, workdir, steps, **SMALL), cwd=ROOT, env=environment(1),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )  # fmt: skip
    return result.returncode, [line for line in result.stdout.splitlines() if line.strip()]


# The most lines main.py may print when no checkpoint restores: its start-up lines (the process
# and devices, the tokenizer, the prepared data: four here) and the one error line.
MOST_LINES_WHEN_NONE_RESTORES = 8


def test_when_every_checkpoint_is_truncated_main_prints_the_one_error_last(
    shared_data, six_steps, tmp_path
):
    """What Orbax and TensorStore print as the reads fail (hundreds of asyncio tracebacks,
    before and after the error) stays off the console."""
    base, _ = six_steps
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    for step in (2, 4, 6):
        truncate_arrays(tmp_path / "checkpoints" / str(step))
    before = file_digests(tmp_path / "checkpoints")
    code, lines = resume_in_main(shared_data, tmp_path, 8)
    text = "\n".join(lines)
    assert code == 2, text[-3000:]
    assert lines[-1].startswith(f"error: {tmp_path}/checkpoints: no checkpoint restores ("), text
    assert len(lines) <= MOST_LINES_WHEN_NONE_RESTORES, text[-3000:]
    assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]
    assert file_digests(tmp_path / "checkpoints") == before
    assert not (tmp_path / "checkpoints_damaged").exists()


def test_a_truncated_newest_checkpoint_is_one_warning_line_and_the_one_before_resumes(
    shared_data, six_steps, tmp_path
):
    base, _ = six_steps
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    truncate_file(tmp_path / "checkpoints" / "6")
    code, lines = resume_in_main(shared_data, tmp_path, 8)
    text = "\n".join(lines)
    assert code == 0, text[-3000:]
    problems = [line for line in lines if "warning: " in line or "error: " in line]
    assert len(problems) == 1, text[-3000:]
    assert f"warning: checkpoint {tmp_path}/checkpoints/6 does not restore" in problems[0], text
    assert "resumed from step 4" in text and "Traceback" not in text, text[-3000:]
    assert "Exception" not in text and "Event loop" not in text, text[-3000:]
    assert checkpoints.load_params(tmp_path)[1]["step"] == 8


def test_a_second_job_on_a_workdir_stops_and_a_killed_holder_does_not_block(
    shared_data, prepared_wiki, tmp_path
):
    with_prepared_data(prepared_wiki, tmp_path)
    args = job_args(shared_data, tmp_path, 1000, **{"train.checkpoint_every": 1000})
    log_path = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(args, cwd=ROOT, env=environment(1), stdout=log, stderr=log)
        try:
            assert wait_for(lambda: steps_logged(log_path, 1000) >= 1, first), log_path.read_text()
            second = subprocess.run(args, cwd=ROOT, env=environment(1), capture_output=True,
                                    text=True, timeout=300)  # fmt: skip
            assert first.poll() is None  # the first job goes on
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and f"--workdir={tmp_path} is in use" in line, line
    assert f"pid {first.pid}" in line, line
    third = job_args(shared_data, tmp_path, 2, **{"train.checkpoint_every": 1000})
    result = subprocess.run(third, cwd=ROOT, env=environment(1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoints.load_params(tmp_path)[1]["step"] == 2


def unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not unshare_works(), reason="needs `unshare -r -m` to mount a small tmpfs")
def test_disk_full_during_a_save_stops_cleanly_and_the_earlier_checkpoint_resumes(
    shared_data, tiny_hf, tmp_path
):
    """Fine-tuning onto a 6 MB tmpfs: the checkpoint of step 2 (about 4 MB) fits, the one
    of step 4 does not (the one before stays until it is complete). The run stops with one
    line; the copy of the workdir taken after it resumes from step 2 and finishes."""
    mount, copy = tmp_path / "tmpfs", tmp_path / "copy"
    mount.mkdir()
    args = glue_args(shared_data, tiny_hf, mount / "run", 6, **{"train.max_to_keep": 1})
    script = (f"mount -t tmpfs -o size=6m tmpfs {mount} && {{ {' '.join(map(str, args))}; "
              f"status=$?; cp -a {mount}/run {copy}; exit $status; }}")  # fmt: skip
    command = ["unshare", "-r", "-m", "sh", "-c", script]
    result = subprocess.run(
        command, cwd=ROOT, env=environment(1), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 2, result.stderr[-3000:]
    # Orbax's background writers may still log the same failure as they end (before or after
    # our line, by thread timing); ours is the one line that starts with "error: "
    # Orbax's failed writes report on no closed event loop (hundreds of tracebacks before)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert "No space left on device" in line, result.stderr[-3000:]
    assert "checkpoint of step 4 failed" in line and "newest complete: step 2" in line, line
    assert checkpoints.Checkpoints(copy, 1).latest_step() == 2
    finish = glue_args(shared_data, tiny_hf, copy, 6, **{"train.max_to_keep": 1})
    result = subprocess.run(finish, cwd=ROOT, env=environment(1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 2" in result.stderr
    assert checkpoints.load_params(copy)[1]["step"] == 6


def test_loading_parameters_of_a_damaged_checkpoint_is_a_clear_error(six_steps, tmp_path):
    """What init_from, export and pretrained.load call: parameters whose bytes no longer give
    the saved numbers (the saved checksum of one altered, as flipped bytes that still decode
    would leave it), or missing files, are a clear error; the step before still loads."""
    base, _ = six_steps
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    saved = tmp_path / "checkpoints" / "6" / "fingerprint" / "metadata"
    fingerprint = json.loads(saved.read_text())
    name = ".params['bert']['embeddings']['word_embeddings']"
    fingerprint["checksums"][name][1] ^= 1
    saved.write_text(json.dumps(fingerprint))
    with pytest.raises(
        UserError, match=re.escape(f"checkpoints/6: damaged checkpoint: array {name}")
    ):
        checkpoints.load_params(tmp_path)
    for path in (tmp_path / "checkpoints" / "4" / "state").glob("ocdbt.process_*/d/*"):
        path.unlink()  # every file of array data: the parameters' too
    with pytest.raises(UserError, match=r"checkpoints/4: damaged checkpoint: .*Error reading"):
        checkpoints.load_params(tmp_path, 4)
    assert len(leaves(tmp_path, 2)) == len(leaves(base, 6))
