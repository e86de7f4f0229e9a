"""The shell commands of README.md and docs/*.md, as tests run them: each fenced block's lines,
backslash continuations joined, split as the shell splits them."""

import pathlib
import re
import shlex

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL = ("", "sh", "bash", "shell")  # the fences whose lines are commands


def blocks(page: pathlib.Path) -> list[tuple[str, list[list[str]]]]:
    """(the text before the block, [command argv]) for each shell block of `page` (lines
    starting with `python` or `.venv/`: other lines are output or comments)."""
    text = page.read_text()
    out, start = [], 0
    for match in FENCE.finditer(text):
        lines = match.group(2).replace("\\\n", " ").splitlines()
        commands = [shlex.split(line) for line in lines if line.startswith(("python", ".venv/"))]
        if match.group(1) in SHELL:
            out.append((text[start : match.start()], commands))
        start = match.end()
    return out


def after(page: pathlib.Path, heading: str) -> list[list[str]]:
    """The commands of the first fenced block after the text `heading` in `page`."""
    for before, commands in blocks(page):
        if heading in before:
            return commands
    raise AssertionError(f"no fenced block after {heading!r} in {page.name}")


def main_py_commands() -> list[tuple[str, list[str]]]:
    """(page name, argv) of every `python main.py ...` command in the README and the docs."""
    return [
        (page.name, argv)
        for page in PAGES
        for _, commands in blocks(page)
        for argv in commands
        if argv[:2] == ["python", "main.py"]
    ]


def replaced(argv: list[str], **flags: str) -> list[str]:
    """`argv` with the value of each `--NAME=VALUE` named in `flags` (dots as `__`) replaced;
    a flag it lacks is added."""
    names = {name.replace("__", "."): value for name, value in flags.items()}
    out = []
    for arg in argv:
        name = arg.partition("=")[0].removeprefix("--")
        out.append(f"--{name}={names.pop(name)}" if name in names else arg)
    return out + [f"--{name}={value}" for name, value in names.items()]
