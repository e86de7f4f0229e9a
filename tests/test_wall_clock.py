"""train.max_wall_clock: a time budget that ends pre-training, checkpointed and evaluated, with
the learning-rate schedule following the budget's elapsed fraction (bert/training/budget.py),
continued, not restarted, by a resumed run."""

import json
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import train_helpers

from bert.jobs import pretrain
from bert.objectives import MlmNsp
from bert.training import budget, checkpoints, optim, sharding
from bert.training import step as step_lib
from tests.test_pretrain_job import ROOT, environment, pretrain_config, scalars, with_prepared_data
from util.errors import Stopped, UserError

BUDGET = 20.0  # seconds of training: 20-60 steps of the tiny model on a loaded 2-core machine
RESUMED = 12.0  # the resumed run's budget, stopped at half: two starts, so a shorter one
PEAK, STEPS = 1e-3, 100_000  # train.steps far above what the budget allows: the budget ends it


def _settings(seconds: float = BUDGET) -> dict:
    return {"train.max_wall_clock": seconds, "train.learning_rate": PEAK,
                "train.warmup_proportion": 0.1, "train.log_every": 1,
                "train.checkpoint_every": STEPS, "train.eval_every": 10}  # fmt: skip


def _schedule():
    """The schedule the job builds from _settings (warm-up over a tenth, linear decay to 0)."""
    return optim.learning_rate_schedule(PEAK, round(0.1 * STEPS), STEPS)


@pytest.mark.full  # two compilations: about 25 s on a loaded 2-core machine
def test_a_budget_step_equals_the_step_count_step():
    """A step given the budget fraction k / steps makes the update of step k of a step-bounded
    run (the progress is a pure input of the jitted step), with the same optimizer state
    structure, so that a run may switch between the two."""
    steps, mesh = 64, sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    objective = MlmNsp(train_helpers.TINY)
    schedule = optim.learning_rate_schedule(1e-2, 8, steps)
    states, metrics = [], []
    for own_rate, timed in ((schedule, 0), (optim.UNIT_RATE, steps)):
        tx = optim.make_optimizer("lamb", own_rate, weight_decay=0.01)
        state = step_lib.create_train_state(objective.model, tx, mesh, seed=0, seq_length=16)
        _, shardings = step_lib.state_shardings(objective.model, tx, mesh, 16)
        train = step_lib.compile_train_step(objective, tx, schedule, mesh, shardings,
                                            timed_steps=timed)  # fmt: skip
        rates = []
        for k in range(10):
            batch = sharding.global_batch(train_helpers.synthetic_batch(k), mesh)
            progress = (np.float32(k / steps),) if timed else ()
            state, out = train(state, batch, *progress)
            rates.append(float(out["learning_rate"]))
        states.append(jax.device_get(state))
        metrics.append(rates)
    np.testing.assert_allclose(metrics[1], metrics[0], rtol=1e-6)
    assert metrics[0][:9] == sorted(metrics[0][:9]) and metrics[0][8] == pytest.approx(1e-2)
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value", [-5.0, float("nan"), float("inf"), "abc", True])
def test_bad_budgets_are_one_clear_error(value, shared_data, tmp_path):
    with pytest.raises(UserError, match=r"^config.train.max_wall_clock=.* must be a number of "
                                        r"seconds >= 0 \(0: no time budget"):  # fmt: skip
        budget.check_seconds(value)
    if isinstance(value, float):  # a config file's value, checked before the data is prepared
        config = pretrain_config(shared_data, tmp_path, 10)
        config.train.max_wall_clock = value
        with pytest.raises(UserError, match="max_wall_clock"):
            pretrain.run(config, str(tmp_path))
        assert not (tmp_path / "data").exists()


def test_a_budget_that_is_not_a_number_on_the_command_line_is_one_line(tmp_path):
    args = [sys.executable, str(ROOT / "main.py"), "--config=configs/bert_base.py:size=tiny",
            f"--workdir={tmp_path}", "--config.train.max_wall_clock=2hours"]  # fmt: skip
    result = subprocess.run(args, cwd=ROOT, env=environment(), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "max_wall_clock" in lines[0] and "2hours" in lines[0]


def _rates(workdir):
    """Per step: (learning rate, budget fraction spent after the step)."""
    rates = dict(scalars(workdir, "train/learning_rate"))
    spent = dict(scalars(workdir, "train/budget_fraction"))
    return [(rates[s], spent[s]) for s in sorted(rates)]


def _check_schedule_followed_the_clock(workdir) -> list[tuple[float, float]]:
    """Each step's learning rate is the schedule at the budget fraction spent before it."""
    steps = _rates(workdir)
    schedule = _schedule()
    before = 0.0
    for rate, after in steps:
        want = float(schedule(np.float32(before) * STEPS))
        assert rate == pytest.approx(want, rel=1e-5, abs=1e-9)
        before = after
    return steps


@pytest.mark.full
def test_budget_ends_the_run_with_a_checkpoint_and_the_schedule_finished(
    shared_data, prepared_wiki, tmp_path
):
    config = pretrain_config(shared_data, tmp_path, STEPS, **_settings())
    with_prepared_data(prepared_wiki, tmp_path)
    results = pretrain.run(config, str(tmp_path))
    last = results["step"]
    assert 5 < last < STEPS
    ckpts = checkpoints.Checkpoints(tmp_path, 1)
    assert ckpts.latest_step() == last  # the last step is checkpointed
    spent = ckpts.meta(last)[budget.META_KEY]
    ckpts.close()
    assert json.loads((tmp_path / "eval_results.json").read_text())["step"] == last
    steps = _check_schedule_followed_the_clock(tmp_path)
    assert len(steps) == last and steps[-1][1] == 1.0
    # the budget ends within a step of its end: training time spent, and the last step began
    # after its share of the budget was spent
    step_seconds = spent / last
    assert BUDGET <= spent <= BUDGET + 5 * step_seconds + 2, (spent, last)
    rates = [rate for rate, _ in steps]
    warm = [rate for rate, after in steps if after < 0.1]
    assert warm == sorted(warm) and max(rates) > 0.5 * PEAK  # warm-up, then the peak
    decay = rates[len(warm) + 1 :]
    assert decay == sorted(decay, reverse=True)  # falling to the end
    # The schedule finished: the last step's rate is (peak - end) x the budget's fraction left
    # when it began, at most its share of the budget (one step of 0.2-1 s in 20 s on this
    # machine; 10% allows a step of 2 s on a loaded one); linear decay reaches 0 at 100%.
    assert rates[-1] <= 0.1 * PEAK and rates[-1] < 0.2 * max(rates)


@pytest.mark.full
def test_a_resumed_run_continues_the_spent_budget(
    shared_data, prepared_wiki, tmp_path, monkeypatch
):
    """Stopped by SIGTERM at half the budget, the run resumes with the time already spent and
    ends at about the same total training time, not after a fresh budget."""
    config = pretrain_config(shared_data, tmp_path, STEPS, **_settings(RESUMED))
    with_prepared_data(prepared_wiki, tmp_path)
    reading = budget.Clock.sample

    def stop_at_half(clock):
        spent = reading(clock)
        if spent >= RESUMED / 2 and not clock.spent_before:
            signal.raise_signal(signal.SIGTERM)  # the loop's handler: checkpoint, then stop
        return spent

    monkeypatch.setattr(budget.Clock, "sample", stop_at_half)
    with pytest.raises(Stopped):
        pretrain.run(config, str(tmp_path))
    monkeypatch.undo()
    ckpts = checkpoints.Checkpoints(tmp_path, 1)
    half = ckpts.latest_step()
    first = ckpts.meta(half)[budget.META_KEY]
    ckpts.close()
    assert RESUMED / 2 <= first < RESUMED, first

    last = pretrain.run(config, str(tmp_path))["step"]
    ckpts = checkpoints.Checkpoints(tmp_path, 1)
    total = ckpts.meta(last)[budget.META_KEY]
    ckpts.close()
    assert last > half
    step_seconds = total / last
    assert RESUMED <= total <= RESUMED + 5 * step_seconds + 2, (first, total)
    steps = _check_schedule_followed_the_clock(tmp_path)  # across the two starts
    assert len(steps) == last and steps[half][1] > first / RESUMED  # continued, not restarted
    assert steps[-1][0] <= 0.1 * PEAK
