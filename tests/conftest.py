"""Test set-up: 8 fake CPU devices and a compilation cache shared by every test process, set
before anything imports TensorFlow or JAX; and the two tiers.

`pytest -q` runs the fast tier: every module, each property once, in minutes. `pytest -q --full`
runs the full suite: also the tests marked `full` (parity runs against the references,
trajectories, fault injection and kill loops, fuzzing, end-to-end jobs through main.py).
"""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
# JAX's persistent compilation cache, shared by the test processes (pytest-xdist's workers and
# the main.py runs the tests start, which inherit the environment): a program compiled once is
# loaded by the next process that needs it. Keyed on the program, the compiler options and the
# JAX version, so it never returns another program's executable.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# No size limit, no eviction: JAX's eviction reads every entry's access-time file, and a main.py
# the fault tests kill between an entry and its access time leaves one without it, after which
# every write warns in every process (stderr's last line then is that warning). A whole run
# writes about 100 MB.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# transformers need not load its TensorFlow models (seconds at each import of
# sentence-transformers); tests/test_st_export.py loads an export once without this, as users do.
os.environ.setdefault("USE_TF", "0")
CHEAP_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _share_the_cores() -> None:
    """Gives each pytest-xdist worker its own share of the CPUs, which the processes it starts
    inherit. XLA and TensorFlow size their thread pools by the CPUs a process may run on; with
    every worker on every core, their spinning pools fight over the cores. Numbers do not
    change: the golden test passes bitwise on one core."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus, index = sorted(os.sched_getaffinity(0)), int(worker[2:])
    os.sched_setaffinity(0, cpus[index::count] or [cpus[index % len(cpus)]])


_share_the_cores()


def _compile_cheaply_here() -> None:
    """Starts JAX in this process with LLVM's cheap optimisation, then puts XLA_FLAGS back as
    they were for the processes the tests start. The in-process tests' programs are tiny and
    run briefly, so compiling costs them more than running (20-45% less time in the files
    that run in process); the main.py runs the tests start train for many steps, which code
    built this way runs more slowly, so they compile as a user's runs do. XLA reads its flags
    once, when the backend starts. Numbers agree up to float rounding (summation order); tests
    compare runs bitwise only within one kind of process. JAX keys its cache on XLA_FLAGS as
    they are when it compiles, so these processes keep their programs in a cache of their own."""
    flags = os.environ["XLA_FLAGS"]
    os.environ["XLA_FLAGS"] = f"{flags} {CHEAP_COMPILE}"
    import jax  # noqa: PLC0415 (after the environment above)

    jax.devices()
    os.environ["XLA_FLAGS"] = flags
    jax.config.update("jax_compilation_cache_dir", str(ROOT / ".cache" / "jax-cheap"))


_compile_cheaply_here()

import shutil  # noqa: E402

import durations  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="run the full suite: also the tests marked full (parity runs, trajectories, fault "
        "injection, fuzzing, end-to-end jobs)",
    )


def pytest_collection_modifyitems(config, items):
    """Without --full, the tests marked `full` are deselected (the fast tier), unless tests are
    named on the command line (FILE::NAME): those run whatever their tier. The files then come
    longest first (tests/durations.py), for the workers' loads to end together."""
    if not config.getoption("--full") and not any("::" in arg for arg in config.args):
        fast = [item for item in items if "full" not in item.keywords]
        if len(fast) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in fast])
            items[:] = fast
    items[:] = durations.longest_first(items, durations.load())


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real data sets beside the repository. Tests needing them skip without them on a
    user's clone, and fail in CI (CI=true), where the folder is always present."""
    if not SHARED_DATA.is_dir():
        message = f"real data folder {SHARED_DATA} is absent (see docs/design.md: Tests)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{message}; CI must run every test that needs it")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def prepared_wiki(shared_data, tmp_path_factory) -> pathlib.Path:
    """The data folder that tests/test_pretrain_job.py's tiny runs prepare in their workdirs
    (job_settings: four Wikipedia files, the uncased WordPiece vocabulary), prepared once per
    test process. A test whose subject is not the preparation starts its workdir with a copy
    (test_pretrain_job.with_prepared_data), which the run finds prepared, as a resumed run
    does: preparing costs each run 2 s on a quiet machine, about 10 s on a loaded one."""
    from test_pretrain_job import pretrain_config

    from bert.jobs import pretrain
    from input_pipeline import data_setup

    workdir = tmp_path_factory.mktemp("prepared_wiki")
    config = pretrain_config(shared_data, workdir, 1)
    data_setup.prepare_pretraining_data(pretrain.corpus(config), workdir)
    return workdir / "data"


TINY_HF = dict(  # a small random BERT over the real uncased WordPiece vocabulary
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


@pytest.fixture(scope="module")
def tiny_model(shared_data):
    """A tiny random HF BertForPreTraining (seed 0) of TINY_HF's sizes."""
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.BertForPreTraining(transformers.BertConfig(**TINY_HF)).eval()


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, tiny_model, shared_data):
    """The tiny model as an HF directory with the uncased vocab.txt beside it."""
    directory = tmp_path_factory.mktemp("tiny_hf")
    tiny_model.save_pretrained(directory)
    shutil.copyfile(shared_data / "vocab" / "bert-base-uncased-vocab.txt", directory / "vocab.txt")
    return directory
