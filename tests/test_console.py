"""What a user sees on the console: every user error as one line naming the file, field or flag,
exit code 2 and no traceback (main.py and the other command-line tools); no third-party start-up
noise unless --verbose; and a warning naming the right JAX install when the system has an NVIDIA
GPU or a TPU that JAX does not use."""

import io
import json
import logging
import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest
from absl import logging as absl_logging
from test_pretrain_job import main_config

from bert.jobs import pretrain
from bert.training import accelerators, reporting
from input_pipeline import data_setup
from util import console
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Start-up lines of TensorFlow (C++), XLA and JAX that a default run must not show.
NOISE = ("oneDNN custom operations", "cpu_feature_guard", "absl::InitializeLog",
         "Unable to initialize backend", "rebuild TensorFlow")  # fmt: skip


def _environment() -> dict[str, str]:
    """The user's environment: no TF_CPP_MIN_LOG_LEVEL (tests/conftest.py sets one), one device."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


def _run(*args: str, module: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, *(["-m", module] if module else [str(ROOT / "main.py")]), *args]
    return subprocess.run(command, cwd=ROOT, env=_environment(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a run that must have stopped on a user error."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _job_error_line(args: list[str]) -> str:
    """The line main.py prints for a pre-training job's user error, from the job run in this
    process: main.py prints every UserError as `error: MESSAGE` (console.report)."""
    with pytest.raises(UserError) as error:
        pretrain.run(main_config(args), args[1].removeprefix("--workdir="))
    return "error: " + " ".join(str(error.value).split("\n")).strip()


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> dict[str, str]:
    """Flags of a tiny pre-training run on the first 30 articles of one real Wikipedia file."""
    folder = tmp_path_factory.mktemp("corpus")
    lines, articles = [], 0
    with open(shared_data / "wikipedia" / "AA" / "wiki_00", encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            articles += line.startswith("</doc>")
            if articles == 30:
                break
    (folder / "wiki_00").write_text("".join(lines), encoding="utf-8")
    return {
        "data.input": str(folder / "wiki_00"),
        "data.format": "wikiextractor",
        "data.tokenizer": str(shared_data / "vocab" / "bert-base-uncased-vocab.txt"),
        "data.num_shards": "2",
        "data.eval_shards": "1",
        "max_seq_length": "32",
        "data.max_predictions_per_seq": "5",
        "model.max_position_embeddings": "32",
        "train.batch_size": "8",
        "train.steps": "2",
        "train.warmup_steps": "1",
        "train.eval_every": "1000",
        "train.eval_batches": "1",
    }


def _pretrain(workdir, settings, *extra: str) -> list[str]:
    return ["--config=configs/bert_base.py:size=tiny", f"--workdir={workdir}",
            *(f"--config.{k}={v}" for k, v in settings.items()), *extra]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# User errors through main.py: one line, exit code 2, stopped before any model is built


def test_flag_and_config_errors_are_one_line(tmp_path):
    config = "--config=configs/bert_base.py:size=tiny"
    workdir = f"--workdir={tmp_path / 'run'}"
    broken = tmp_path / "broken_config.py"  # a config file of the user's with a bug in it
    broken.write_text("def get_config():\n    return undefined_name\n")
    cases = {  # arguments -> what the one line must name
        (config,): "--workdir is required",
        (workdir,): "--config is required",
        ("--config=configs/no_such.py", workdir): "--config=configs/no_such.py: no such file",
        ("--config=configs/bert_base.py:size=tnyi", workdir): "unknown model size 'tnyi'",
        (config, workdir, "--config.train.learnig_rate=0.1"):
            '--config.train.learnig_rate: no config field \'learnig_rate\'; Did you mean '
            '"learning_rate"',
        (config, workdir, "--config.dta.input=x"): "--config.dta.input: no config field 'dta'",
        (config, workdir, "--config.train.steps=many"): "--config.train.steps=many",
        (config, workdir, "--config.task=translate"): "config.task 'translate' is not one of",
        (config, workdir, "stray"): "unexpected arguments: stray",
        (f"--config={broken}", workdir): "--config: NameError: name 'undefined_name'",
    }  # fmt: skip
    for args, named in cases.items():
        result = _run(*args)
        line = _error_line(result)
        assert named in line, (args, line)
        assert result.stderr.strip() == line, (args, result.stderr)  # nothing else printed
    assert not (tmp_path / "run").exists()
    # --verbose: a config file failing for a reason other than a user error shows its traceback.
    verbose = _run(f"--config={broken}", workdir, "--verbose")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    assert "NameError: name 'undefined_name' is not defined" in verbose.stderr


@pytest.mark.full
def test_data_and_checkpoint_errors_are_one_line(corpus, tmp_path):
    malformed = tmp_path / "cut.txt"
    malformed.write_text('<doc id="1" title="A">\nA\nOnly a start.\n', encoding="utf-8")
    bad_json = tmp_path / "broken_checkpoint"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json", encoding="utf-8")
    cases = {  # (workdir name, arguments) -> what the one line must name
        ("missing", "data.input=/no/such/dir/*.txt"): "no corpus file matches '/no/such/dir/*.txt'",
        ("malformed", f"data.input={malformed}"): f"{malformed}: ends inside the document opened",
        ("model", "model.hidden_act=tanh"): "config.model.hidden_act 'tanh' is not one of",
        ("tokenizer", "data.tokenizer=/no/vocab.txt"): "/no/vocab.txt does not exist",
        ("cudnn", "model.attention_impl=cudnn"): "config.model.attention_dropout=0",
    }  # fmt: skip
    through_main = ("missing", "malformed")  # the others in this process, as main.py runs them
    for (name, override), named in cases.items():
        key, value = override.split("=", 1)
        workdir = tmp_path / name
        args = _pretrain(workdir, {**corpus, key: value})
        line = _error_line(_run(*args)) if name in through_main else _job_error_line(args)
        assert named in line, (override, line)
        assert not (workdir / "checkpoints").exists()
    for init_from, named in ((tmp_path / "nowhere", "checkpoint directory not found"),
                             (bad_json, "config.json: not valid JSON")):  # fmt: skip
        sts = ["--config=configs/sts.py", f"--workdir={tmp_path / 'sts'}",
               f"--config.init_from={init_from}", "--config.eval_file=unused.csv"]  # fmt: skip
        line = _error_line(_run(*sts))
        assert str(init_from) in line and named in line, line


def test_offline_default_corpus_is_one_line(tmp_path):
    """The README's first command without the Hub (tests run with HF_HUB_OFFLINE=1)."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    line = _error_line(_run("--config=configs/bert_base.py", f"--workdir={tmp_path / 'run'}"))
    assert "config.data.input=" in line and line.endswith(data_setup.LOCAL_INSTEAD)
    assert not (tmp_path / "run").exists()


def test_other_tools_report_user_errors_as_one_line(tmp_path):
    line = _error_line(_run(str(tmp_path / "nowhere"), str(tmp_path / "out"), "--to=hf",
                            module="bert.convert"))  # fmt: skip
    assert f"{tmp_path / 'nowhere'}: checkpoint directory not found" in line
    line = _error_line(_run(str(tmp_path / "nowhere"), "--to=hf", module="bert.convert"))
    assert "destination" in line and "--help" in line  # argparse's usage error, in one line
    damaged = tmp_path / "google"  # TensorFlow, imported late to read it, stays quiet too
    damaged.mkdir()
    config = {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 37,
              "max_position_embeddings": 64, "type_vocab_size": 2}  # fmt: skip
    (damaged / "bert_config.json").write_text(json.dumps(config))
    (damaged / "bert_model.ckpt.index").write_bytes(b"\x07 not a table" * 40)
    result = _run(str(damaged / "bert_model.ckpt"), str(tmp_path / "out"), "--to=hf",
                  module="bert.convert")  # fmt: skip
    assert "bert_model.ckpt: cannot read TF checkpoint" in _error_line(result)
    assert [n for n in NOISE if n in result.stderr] == [], result.stderr[:3000]
    line = _error_line(_run(str(tmp_path / "nowhere"), "A [MASK].", module="bert.fill_mask"))
    assert str(tmp_path / "nowhere") in line
    prepare = ["--input=/no/such/*.txt", f"--output={tmp_path / 'p'}", "--format=text",
               f"--tokenizer={tmp_path / 'vocab.txt'}"]  # fmt: skip
    line = _error_line(_run(*prepare, module="input_pipeline.prepare"))
    assert "/no/such/*.txt" in line
    line = _error_line(_run(*prepare[:3], "--format=xml", module="input_pipeline.prepare"))
    assert "--format" in line and "xml" in line


# ---------------------------------------------------------------------------------------------
# Start-up noise


@pytest.mark.full
def test_default_run_is_quiet_and_verbose_shows_the_noise(corpus, tmp_path):
    result = _run(*_pretrain(tmp_path / "run", corpus))
    assert result.returncode == 0, result.stderr[-3000:]
    shown = [n for n in NOISE if n in result.stderr]
    assert shown == [], result.stderr[:3000]
    # Our own progress lines and the metric lines still show.
    for ours in ("process 0 of 1", "prepared", "step 2/2", "train/loss=", "eval/mlm_loss="):
        assert ours in result.stderr, ours
    # --verbose: the same third-party lines are back; a user error is still one line.
    verbose = _run(*_pretrain(tmp_path / "verbose", corpus, "--verbose"),
                   "--config.data.input=/no/such/*.txt")  # fmt: skip
    assert "no corpus file matches" in _error_line(verbose)
    assert [n for n in NOISE if n in verbose.stderr], verbose.stderr[:3000]


# ---------------------------------------------------------------------------------------------
# Accelerators visible to the system but not to JAX


def _tree(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _pinned_jax() -> str:
    pins = dict(re.findall(r"^([\w-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    return pins["jax"]


CPU_ONLY = {  # a cloud VM without accelerators: Intel and Google (gVNIC network) PCI devices
    "dev/null": "",
    "dev/vfio/vfio": "",
    "proc/cpuinfo": "processor : 0\n",
    "sys/bus/pci/devices/0000:00:00.0/vendor": "0x8086\n",
    "sys/bus/pci/devices/0000:00:00.0/device": "0x1237\n",
    "sys/bus/pci/devices/0000:00:04.0/vendor": "0x1ae0\n",
    "sys/bus/pci/devices/0000:00:04.0/device": "0x0042\n",
}


def test_accelerator_warning_names_the_install(tmp_path):
    version = _pinned_jax()
    assert version == jax.__version__  # the hint pins the installed version, as requirements.txt
    pci = "sys/bus/pci/devices/0000:00:05.0/"
    driver = "proc/driver/nvidia/version"
    trees = {  # name -> (files beside CPU_ONLY, the install the warning must name)
        "gpu_old": ({"dev/nvidia0": "", "dev/nvidiactl": "", driver: "NVRM version: NVIDIA UNIX "
                     "x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"}, "cuda12"),
        "gpu_new": ({"dev/nvidiactl": "", driver: "NVRM version: NVIDIA UNIX Open Kernel Module "
                     "for x86_64  580.65.06  Release Build\n"}, "cuda13"),
        "tpu": ({"dev/vfio/0": "", pci + "vendor": "0x1ae0\n", pci + "device": "0x0063\n"}, "tpu"),
        "tpu_new": ({"dev/accel0": "", pci + "vendor": "0x1ae0\n", pci + "device": "0x00ff\n"},
                    "tpu"),
    }  # fmt: skip
    for name, (files, extra) in trees.items():
        root = _tree(tmp_path / name, {**CPU_ONLY, **files})
        warning = accelerators.startup_warning("cpu", version, root)
        assert warning is not None and f"pip install 'jax[{extra}]=={version}'" in warning, name
        assert "\n" not in warning
        # JAX already on the accelerator: nothing to say.
        assert accelerators.startup_warning(name[:3], version, root) is None
    cpu = _tree(tmp_path / "cpu", CPU_ONLY)
    assert accelerators.startup_warning("cpu", version, cpu) is None
    assert accelerators.startup_warning("cpu", version, tmp_path / "empty") is None


def test_readme_installs_match_the_pinned_jax():
    readme = (ROOT / "README.md").read_text()
    version = _pinned_jax()
    accelerators_part = readme[readme.index("## Accelerators") :]
    for extra in ("cuda12", "cuda13", "tpu"):
        assert f'"jax[{extra}]=={version}"' in accelerators_part, extra
    two = readme[readme.index("## Two commands") : readme.index("## Status")]
    assert len(re.findall(r"^python3 -m venv", two, re.M)) == 2


def test_installed_but_failing_plugin_is_not_told_to_install_again():
    warning = accelerators.install_hint("gpu", "cpu", "0.10.2", 580, plugin_installed=True)
    assert "plugin is installed" in warning and "pip install" not in warning


@pytest.mark.skipif(
    sys.platform != "linux" or jax.default_backend() != "cpu",
    reason="JAX suggests plugins on Linux only, when it runs on the CPU",
)
def test_log_filter_hides_jax_backend_probing_but_not_failures(monkeypatch):
    """JAX's own start-up warning for a GPU it cannot use (its real code, on a system made to
    look as if it had one) is replaced by ours; its report of a CUDA plugin failing still shows."""
    from jax._src import hardware_utils, xla_bridge

    jax.devices()  # backends initialised, as in main.py
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    xla_bridge.logger.addHandler(handler)
    monkeypatch.setattr(hardware_utils, "has_visible_nvidia_gpu", lambda: True)
    try:
        xla_bridge._suggest_missing_backends()
    finally:
        xla_bridge.logger.removeHandler(handler)
    assert [r.getMessage()[:30] for r in records] == ["An NVIDIA GPU may be present o"]
    assert not console.is_shown(records[0])
    failed = "CUDA backend failed to initialize: %s."
    failed = logging.LogRecord(xla_bridge.logger.name, logging.WARNING, xla_bridge.__file__, 1,
                               failed, ("driver",), None)  # fmt: skip
    assert console.is_shown(failed)
    ours = logging.LogRecord("absl", logging.INFO, str(ROOT / "bert/training/loop.py"), 1,
                             "step 2/2", None, None)  # fmt: skip
    library = logging.LogRecord("absl", logging.INFO, xla_bridge.__file__, 1, "chatter", None,
                                None)  # fmt: skip
    assert console.is_shown(ours) and not console.is_shown(library)


def test_eta_counts_days_beyond_a_day_at_the_pace_after_compiling(monkeypatch):
    """A run of 90 days shows its days (a clock alone wrapped at 24 hours); the first step's
    compilation is not counted as the pace."""
    clock = iter([0.0, 60.0, 587.04])  # compiled in 60 s; then 61 steps of 8.64 s
    monkeypatch.setattr(reporting.time, "perf_counter", lambda: next(clock))
    progress = reporting.Progress(900_062, 0, sequences_per_step=32, seq_len=128)
    assert progress.eta_text(0) == "?"
    progress.update(1)
    assert progress.first_step_seconds() == 60.0
    assert progress.eta_text(62) == "90d 00:00:00"  # 900,000 steps to go
    assert reporting.duration_text(5692.4) == "01:34:52"
    assert reporting.duration_text(86399.6) == "1d 00:00:00"


def test_a_log_line_clears_the_progress_bar_first(monkeypatch):
    """On a terminal the bar and the log lines do not run into each other: a log line clears the
    bar's line, and the next step draws the bar again below it."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    progress = reporting.Progress(10, 0, sequences_per_step=1, seq_len=8)
    progress.update(1)
    record = logging.LogRecord("absl", logging.INFO, __file__, 1, "[1] train/loss=2.0", None, None)
    assert absl_logging.get_absl_handler().filter(record)  # the handler's filters let it through
    progress.update(2)
    progress.close()
    text = terminal.getvalue()
    assert text.index("step 1/10") < text.index("\r\x1b[K") < text.index("step 2/10")
    assert text.endswith("\n") and text.count("\x1b[K") == 1
    assert absl_logging.get_absl_handler().filter(record) and terminal.getvalue() == text


def test_help_is_the_usage_and_exits_0():
    result = _run("--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: python main.py --config=configs/FILE.py")
    assert "Exit codes: 0 finished; 2 a user error" in result.stdout
    named = set(re.findall(r"\b(\w+)\.py\b", result.stdout.split("\n\n")[1]))
    assert named and all((ROOT / "configs" / f"{name}.py").is_file() for name in named), named
