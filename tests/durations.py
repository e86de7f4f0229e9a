"""The order in which pytest-xdist hands test files to its workers: the longest first.

Each worker takes whole files (`--dist loadfile`) and, unordered, files arrive by name, so one
of the slowest could start last and leave the other core idle while it runs. conftest.py sorts
the collected tests by their file's seconds (the sum of its selected tests' recorded seconds in
durations.json beside this file, longest first; a file with none recorded goes last, in name
order), which keeps the two workers' loads close
(longest-processing-time-first scheduling). Only the order changes: every test runs as before.

Refresh the record after tests were added or became slower (seconds of the whole suite):

  pytest -q --full --junitxml=/tmp/full.xml && python tests/durations.py /tmp/full.xml
"""

import collections
import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

RECORD = pathlib.Path(__file__).with_name("durations.json")


def load() -> dict[str, float]:
    """Test id (tests/test_x.py::name[params]) -> recorded seconds; empty without a record."""
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def longest_first(items: list, seconds: dict[str, float]) -> list:
    """`items` (pytest's) grouped by file, the files by their tests' recorded `seconds` summed,
    descending (ties and unrecorded files in collection order); a file's tests keep their
    order."""
    files: dict[str, list] = collections.defaultdict(list)
    for item in items:
        files[item.nodeid.split("::")[0]].append(item)
    total = {
        name: sum(seconds.get(item.nodeid, 0.0) for item in tests) for name, tests in files.items()
    }
    ranked = sorted(files, key=lambda name: -total[name])  # stable: ties keep their order
    return [item for name in ranked for item in files[name]]


def from_junit(path: str) -> dict[str, float]:
    """Seconds per test id (setup, call and teardown) from a junit XML report."""
    record = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")  # tests.test_x[.Class]
        test_id = "::".join(["/".join(parts[:2]) + ".py", *parts[2:], case.get("name", "")])
        record[test_id] = round(float(case.get("time", 0.0)), 2)
    return dict(sorted(record.items()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/durations.py JUNIT_XML")
    record = from_junit(sys.argv[1])
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{RECORD}: {len(record)} tests, {sum(record.values()):.0f} s in all")
