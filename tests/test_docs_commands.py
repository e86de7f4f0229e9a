"""The commands of README.md and docs/*.md stay true: every `python main.py` command builds its
config as main.py does (the config file and its arg exist, each --config.FIELD names a field and
its value parses, the task has a job), and each `python -m` module exists. The README's
pre-training and fill-mask recipe runs in tests/test_pretrain_job.py, the notebook's workflow in
tests/test_notebook.py."""

import importlib.util

import pytest
from absl import flags
from ml_collections import config_flags

from bert import jobs
from tests import docs_commands

MAIN_COMMANDS = docs_commands.main_py_commands()


def main_config(argv: list[str], monkeypatch):
    """The config `python main.py ARGS` builds, with main.py's flag definitions (ml_collections
    reads the overrides from sys.argv)."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    monkeypatch.setattr("sys.argv", ["main.py", *argv[2:]])
    values(["main.py", *argv[2:]])
    return values["config"].value


def test_the_pages_hold_main_commands_of_every_config():
    configs = {argv[2].split("=")[1].split(":")[0] for _, argv in MAIN_COMMANDS}
    assert {"configs/bert_base.py", "configs/modernbert.py", "configs/glue.py", "configs/squad.py",
            "configs/ner.py", "configs/sts.py", "configs/embeddings.py"} <= configs  # fmt: skip


@pytest.mark.parametrize(
    "page,argv", MAIN_COMMANDS, ids=[f"{p}:{a[2].split('/')[-1]}" for p, a in MAIN_COMMANDS]
)
def test_main_command_builds_its_config(page, argv, monkeypatch):
    config = main_config(argv, monkeypatch)
    jobs.check(config.task)
    for arg in argv[3:]:
        if arg.startswith("--config."):
            field, value = arg.removeprefix("--config.").split("=", 1)
            got = config
            for part in field.split("."):
                got = got[part]
            assert str(got) == value, (page, field, got, value)


def test_every_python_module_command_names_a_module():
    modules = {
        argv[2]
        for page in docs_commands.PAGES
        for _, commands in docs_commands.blocks(page)
        for argv in commands
        if argv[:2] == ["python", "-m"]
    }
    assert {"bert.convert", "bert.fill_mask"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module
