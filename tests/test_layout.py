"""The house rules that a reader relies on: docs/design.md's Layout lists every module and
nothing else, each folder imports only what its concern allows (the utilities below everything,
the data pipeline below the model code, the training machinery knowing no objective, job, task
or data format, conversion one-way), only jobs read config sections, and files and functions
stay short."""

import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 510  # "about 500"
MAX_FUNCTION_LINES = 80
MODEL_LIBRARY = ("bert/model.py", "bert/dropout.py", "bert/rope.py", "bert/attention.py",
                 "bert/chunked_attention.py", "bert/layer_stack.py", "bert/heads.py",
                 "bert/losses.py", "bert/flops.py")  # fmt: skip
PACKAGES = ("bert/", "configs/", "input_pipeline/", "util/")
# the utilities that moved out of the data pipeline: none may come back into it
UTILITIES = ("errors", "console", "paths", "atomic", "workdir_lock", "text_files", "hub")


def _modules() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(f for f in listed if (ROOT / f).is_file())


def _imports(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_design_notes_layout_lists_every_module():
    readme = (ROOT / "docs" / "design.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Tests")]
    listed = set(re.findall(r"^((?:bert|configs|input_pipeline|util)/[\w/]+\.py|main\.py)",
                            layout, re.M))  # fmt: skip
    code = {
        f
        for f in _modules()
        if (f.startswith(PACKAGES) or f == "main.py")
        and not f.endswith(("__init__.py", "__main__.py"))
    }
    assert sorted(code - listed) == [], "modules missing from docs/design.md's Layout"
    assert sorted(listed - code) == [], "docs/design.md's Layout lists modules that do not exist"


def _ours(imports: set[str], *prefixes: str) -> set[str]:
    """The imports of `imports` that are `prefixes` or inside them."""
    return {i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes)}


def test_each_folder_imports_only_its_concern():
    for path in _modules():
        imports = _imports(path)
        if path.startswith("util/"):
            assert not _ours(imports, "bert", "input_pipeline", "configs"), path
        if path.startswith("input_pipeline/"):
            assert not _ours(imports, "flax", "optax", "bert", "configs"), path
            assert pathlib.Path(path).stem not in UTILITIES, path
        if path in MODEL_LIBRARY:
            allowed = {
                "bert.model",
                "bert.dropout",
                "bert.rope",
                "bert.attention",
                "bert.chunked_attention",
            }
            assert not _ours(imports, "bert", "input_pipeline") - allowed, path
        if path.startswith("bert/training/"):
            assert not _ours(imports, "input_pipeline", "bert.objectives", "bert.jobs",
                             "bert.tasks", "bert.finetuning", "bert.pretrained"), path  # fmt: skip
        if path.startswith("bert/convert/") and not path.endswith("__main__.py"):
            # __main__.py is the entry point of `python -m bert.convert`, which nothing imports
            assert not _ours(imports, "bert.pretrained", "bert.jobs", "bert.tasks",
                             "bert.training", "bert.export", "bert.finetuning"), path  # fmt: skip
        if path.startswith("bert/objectives/"):
            assert not _ours(imports, "input_pipeline", "bert.jobs", "bert.tasks",
                             "bert.training", "bert.finetuning"), path  # fmt: skip
        if path.startswith(("bert/finetuning/", "bert/tasks/", "bert/export/")):
            assert not _ours(imports, "bert.jobs"), path


def test_only_jobs_read_config_sections():
    """ml_collections (a config section's type) only in configs, the jobs and the entry points."""
    allowed = ("configs/", "bert/jobs/", "main.py")
    for path in _modules():
        if path.startswith(PACKAGES) and not path.startswith(allowed):
            assert "ml_collections" not in _imports(path), path


def test_files_and_functions_stay_short():
    for path in _modules():
        text = (ROOT / path).read_text()
        assert text.count("\n") <= MAX_FILE_LINES, f"{path}: {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {lines}"


def test_jobs_on_files_start_without_tensorflow():
    """Fine-tuning, STS and sentence-embedding jobs never load TensorFlow (seconds at every
    start); the pre-training pipeline and TFDS readers do (util/tf_runtime.py)."""
    jobs = ("glue", "ner", "squad", "sts", "embeddings")
    code = f"import sys\nimport {', '.join(f'bert.jobs.{j}' for j in jobs)}\n"
    code += "heavy = ('tensorflow', 'keras', 'tensorflow_datasets')\n"
    code += "print(sorted(m for m in heavy if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert loaded.strip() == "[]", loaded
