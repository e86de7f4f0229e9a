"""Seeded fuzzing of file readers: random mutations of real files, each case bounded in time.

A case is one mutated file handed to a reader. It passes when the reader raises a UserError
whose message names the file (one line, not a dump of the input), or returns a result that the
caller's sanity check accepts; any other exception, a check that fails or a case running past
its time limit fails the test, listed with its seed and mutation so that it can be replayed.
"""

import contextlib
import dataclasses
import json
import math
import pathlib
import random
import signal
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from util.errors import UserError

CASE_SECONDS = 10.0  # one case's limit: a reader slower than this on a small file hangs
MAX_MESSAGE = 1000  # characters: a longer error message dumps the input instead of naming it
GARBAGE = (b"\x00", b"\xff", b"\xfe", b"\t", b"\r", b"\n", b'"', b"{", b"}", b"<doc>", b"\xc3",
           b"\xe2\x80", b"\\u", b"-DOCSTART-", b"\r\n", b"</doc>")  # fmt: skip
WEIRD_VALUES = (None, 0, -1, 1.5, "", "x", [], {}, True, 10**30, -(10**30), "nan", [1, 2], {"a": 1},
                "a lone \ud800 surrogate")  # fmt: skip


class CaseTimeout(BaseException):
    """Raised inside a case that ran past CASE_SECONDS (BaseException: readers cannot catch it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum, frame):
        raise CaseTimeout(f"ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# Mutations: each takes (bytes, rng) and returns (bytes, a short description)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def truncate(data, rng):
    cut = rng.randrange(len(data) + 1)
    return data[:cut], f"truncate at byte {cut}"


def flip(data, rng):
    data, where = bytearray(data), []
    for _ in range(rng.randint(1, 8)):
        if data:
            i = rng.randrange(len(data))
            data[i] ^= rng.randrange(1, 256)
            where.append(i)
    return bytes(data), f"flip bytes {where}"


def insert(data, rng):
    i = rng.randrange(len(data) + 1)
    piece = rng.choice(GARBAGE) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 16))
    return data[:i] + piece + data[i:], f"insert {piece!r} at {i}"


def delete(data, rng):
    i = rng.randrange(len(data) + 1)
    n = rng.randint(1, 64)
    return data[:i] + data[i + n :], f"delete {n} bytes at {i}"


def latin1(data, rng):
    return _text(data).encode("latin-1", "replace"), "re-encoded as latin-1"


def utf16(data, rng):
    kind = rng.choice(("utf-16", "utf-16-le", "utf-16-be", "utf-32"))
    return _text(data).encode(kind), f"re-encoded as {kind}"


def bom(data, rng):
    return b"\xef\xbb\xbf" + data, "UTF-8 byte order mark added"


def garbage(data, rng):
    n = rng.choice((0, 1, 7, 100, 4096))
    return rng.randbytes(n), f"{n} random bytes"


def long_line(data, rng):
    i = rng.randrange(len(data) + 1)
    unit = rng.choice((b"x", b". ", b"Mr. ", b"a.b", b"?!", b"\xe2\x80\x9c", b"  ", b"\t"))
    run = unit * (200_000 // len(unit))
    return data[:i] + run + data[i:], f"{len(run)} bytes of {unit!r} at {i}"


def line_endings(data, rng):
    ending = rng.choice((b"\r\n", b"\r"))
    return data.replace(b"\n", ending), f"line endings {ending!r}"


def shuffle_lines(data, rng):
    lines = _lines(data)
    rng.shuffle(lines)
    return b"\n".join(lines), "lines shuffled"


def drop_or_repeat_line(data, rng):
    lines = _lines(data)
    i = rng.randrange(len(lines))
    if rng.random() < 0.5:
        return b"\n".join(lines[:i] + lines[i + 1 :]), f"line {i + 1} dropped"
    return b"\n".join(lines[: i + 1] + lines[i:]), f"line {i + 1} repeated"


def columns(data, rng):
    """Drops or repeats one column (tab- or space-separated), in every line or in one."""
    sep = b"\t" if b"\t" in data else b" "
    lines = _lines(data)
    column = rng.randrange(8)
    repeat = rng.random() < 0.5
    only = rng.randrange(len(lines)) if rng.random() < 0.5 else None
    out = []
    for number, line in enumerate(lines):
        fields = line.split(sep)
        if (only is None or number == only) and column < len(fields):
            fields[column : column + 1] = [fields[column]] * 2 if repeat else []
        out.append(sep.join(fields))
    what = f"column {column} {'repeated' if repeat else 'dropped'}"
    return b"\n".join(out), what + (f" in line {only + 1}" if only is not None else "")


BYTE_MUTATIONS = (truncate, flip, insert, delete, latin1, utf16, bom, garbage, long_line,
                  line_endings, shuffle_lines, drop_or_repeat_line, columns)  # fmt: skip


def _json_nodes(value: Any, where: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
        value, list) else ()  # fmt: skip
    for key, child in items:
        yield from _json_nodes(child, (*where, key))


def json_structure(data, rng):
    """Parses the JSON, then deletes a key or gives one node a value of another type."""
    try:
        value = json.loads(data)
    except ValueError:
        return flip(data, rng)
    nodes = list(_json_nodes(value))
    where, _ = rng.choice(nodes[1:] or nodes)
    if not where:
        return json.dumps(rng.choice(WEIRD_VALUES)).encode(), "top level replaced"
    parent = value
    for key in where[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[where[-1]]
        return json.dumps(value).encode(), f"deleted {list(where)}"
    weird = rng.choice(WEIRD_VALUES)
    parent[where[-1]] = weird
    return json.dumps(value).encode(), f"{list(where)} = {weird!r}"


def json_surrogate(data, rng):
    """Parses the JSON, then puts a lone surrogate ("\\ud83d": half a character, as a cut emoji
    leaves it) into one of its strings."""
    try:
        value = json.loads(data)
    except ValueError:
        return flip(data, rng)
    strings = [(where, v) for where, v in _json_nodes(value) if where and isinstance(v, str)]
    if not strings:
        return flip(data, rng)
    where, text = rng.choice(strings)
    parent = value
    for key in where[:-1]:
        parent = parent[key]
    at = rng.randrange(len(text) + 1)
    parent[where[-1]] = text[:at] + rng.choice("\ud83d\udc80") + text[at:]
    return json.dumps(value).encode(), f"a lone surrogate in {list(where)} at {at}"


def mutate(data: bytes, rng: random.Random, mutations=BYTE_MUTATIONS) -> tuple[bytes, str]:
    """One to three mutations in a row, chosen by `rng`."""
    done = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data, what = rng.choice(mutations)(data, rng)
        done.append(what)
    return data, "; ".join(done)


# ---------------------------------------------------------------------------------------------
# The runner


@dataclasses.dataclass
class Report:
    """What the cases of one reader gave."""

    errors: int = 0  # UserErrors naming the file
    parsed: int = 0  # results that passed the sanity check
    failures: list[str] = dataclasses.field(default_factory=list)

    def assert_clean(self, name: str, min_errors: int = 10, min_parsed: int = 10) -> None:
        print(f"{name}: {self.errors} errors, {self.parsed} parsed, {len(self.failures)} bad")
        shown = "\n".join(self.failures[:8])
        assert not self.failures, f"{name}: {len(self.failures)} bad case(s), e.g.:\n{shown}"
        # Both outcomes seen: the mutations reach the reader's checks and leave some files good.
        assert self.errors >= min_errors, f"{name}: only {self.errors} errors"
        assert self.parsed >= min_parsed, f"{name}: only {self.parsed} clean parses"


def run_cases(
    base: bytes,
    read: Callable[[pathlib.Path], Any],
    check: Callable[[Any, bytes], None],
    folder: pathlib.Path,
    file_name: str,
    cases: int,
    seed: int,
    mutations=BYTE_MUTATIONS,
    make: Callable[[bytes, random.Random], tuple[bytes, str]] | None = None,
    named: Callable[[pathlib.Path], str] = str,
) -> Report:
    """Runs `cases` mutated copies of `base` through `read` (given the file's path).

    Args:
      check: raises AssertionError when a parse is not sane (given the result and the bytes).
      make: builds a case's bytes from `base` instead of `mutate` (e.g. mutate, then compress).
      named: what a UserError's message must contain (default: the file's full path).
    """
    report = Report()
    for case in range(cases):
        rng = random.Random(seed * 100_003 + case)
        data, what = (make or (lambda d, r: mutate(d, r, mutations)))(base, rng)
        path = folder / f"case{case}" / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        label = f"seed {seed} case {case} ({what})"
        try:
            with time_limit(CASE_SECONDS):
                result = read(path)
                check(result, data)
        except UserError as e:
            message = str(e)
            if named(path) not in message:
                report.failures.append(f"{label}: message does not name {named(path)}: {e}")
            elif len(message) > MAX_MESSAGE:
                report.failures.append(f"{label}: {len(message)}-character message")
            else:
                report.errors += 1
        except CaseTimeout as e:
            report.failures.append(f"{label}: hang, {e}")
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 (what the fuzzing looks for; Rust panics too)
            frame = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{pathlib.Path(frame.filename).name}:{frame.lineno}"
            report.failures.append(f"{label}: {type(e).__name__} at {where}: {str(e)[:300]}")
        else:
            report.parsed += 1
        for leftover in path.parent.iterdir():
            leftover.unlink() if leftover.is_file() else None
    return report


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
