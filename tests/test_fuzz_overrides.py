"""Fuzzing config overrides (`--config.FIELD=VALUE`) as main.py parses them: a random field of a
real config file (sometimes misspelt) gets a random value. Each case either parses, the field
keeping its type, or gives the one line main.py prints (console.flag_error_message), naming
the flag or field; never another exception, never a message of several lines."""

import random
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from tests import fuzz
from util import console

CASES = 300
CONFIGS = ("configs/bert_base.py:size=tiny", "configs/modernbert.py:size=tiny",
           "configs/glue.py:task=sst2", "configs/squad.py", "configs/ner.py",
           "configs/sts.py")  # fmt: skip
VALUES = ("", "many", "1.5", "-1", "0", "nan", "inf", "1e99", "True", "None", "[1, 2]", "{}",
          "(1,", "0x10", "'quoted'", "x" * 300, "日本", "a=b", "--", ",", " ", "\t", "1_000",
          "-0.0", "\\", "${HOME}")  # fmt: skip


def _fields(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
    found = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            found.update(_fields(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def _misspelt(name: str, rng: random.Random) -> str:
    parts = name.split(".")
    i = rng.randrange(len(parts))
    part = parts[i]
    roll = rng.random()
    if roll < 0.3 and len(part) > 1:
        j = rng.randrange(len(part) - 1)
        part = part[:j] + part[j + 1] + part[j] + part[j + 2 :]  # two letters swapped
    elif roll < 0.6:
        part = part[:-1]
    elif roll < 0.8:
        part = ""  # an empty component: --config.train..steps
    else:
        parts.append(rng.choice(("x", "steps", "0")))
    parts[i] = part
    return ".".join(parts)


def _parse(argv: list[str], monkeypatch) -> ml_collections.ConfigDict:
    """absl's parsing as main.py does it (ml_collections reads sys.argv for the overrides)."""
    values = flags.FlagValues()
    config = config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                             lock_config=True)  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["main.py", *argv])
    values(["main.py", *argv])
    return config.value


def test_config_overrides(monkeypatch):
    fields = {}
    for spec in CONFIGS:
        fields[spec] = _fields(_parse([f"--config={spec}"], monkeypatch))
    parsed = errors = 0
    failures = []
    for case in range(CASES):
        rng = random.Random(case)
        spec = rng.choice(CONFIGS)
        field = rng.choice(sorted(fields[spec]))
        name = _misspelt(field, rng) if rng.random() < 0.25 else field
        value = rng.choice(VALUES) if rng.random() < 0.8 else str(fields[spec][field])
        argv = [f"--config={spec}", f"--config.{name}={value}"]
        label = f"case {case}: {argv}"
        try:
            with fuzz.time_limit(fuzz.CASE_SECONDS):
                config = _parse(argv, monkeypatch)
            old, new = fields[spec][field], _fields(config).get(name)
            assert name == field, f"{label}: a misspelt field was accepted"
            assert old is None or type(new) is type(old), f"{label}: {old!r} became {new!r}"
            parsed += 1
        except AssertionError as e:
            failures.append(str(e))
        except Exception as e:  # noqa: BLE001 (main.py turns any of these into its one line)
            message = console.flag_error_message(e, argv)
            short = name.split(".")[-1] or name
            if "\n" in message or len(message) > fuzz.MAX_MESSAGE:
                failures.append(f"{label}: message of {len(message)} characters: {message!r}")
            elif f"--config.{name}" not in message and short not in message:
                failures.append(f"{label}: message does not name the flag: {message}")
            else:
                errors += 1
    shown = "\n".join(failures[:8])
    assert not failures, f"{len(failures)} bad case(s), e.g.:\n{shown}"
    assert errors >= 30 and parsed >= 30, (errors, parsed)


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_config_parses_unchanged(spec, monkeypatch):
    """The fuzzing starts from configs that parse (a broken config file would make every case
    an error)."""
    assert _fields(_parse([f"--config={spec}"], monkeypatch))
