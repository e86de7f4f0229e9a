"""The tagging job on the user's own files (configs/tag.py, bert/jobs/tag.py): MSRA's Chinese
NER, one character per line, trained from a random encoder, scores equal to conlleval's
(the `conlleval` package, a line-for-line port of conlleval.pl) on the predictions it writes;
IOB1, IOBES and character-level JSONL read as the same sentences and score as IOB2 does; a tag
out of place stops with its file and line."""

import json
import os
import pathlib
import subprocess
import sys

import conlleval
import numpy as np
import pytest
import transformers

from bert import predict
from bert.export import workdirs
from bert.jobs import tag as tag_job
from bert.tasks import metrics, ner, tagging
from configs import tag as tag_config
from input_pipeline import tokenizers
from util.errors import UserError

SENTENCES = 900
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def msra(shared_data, tmp_path_factory):
    """The first SENTENCES sentences of MSRA's training file that name an entity, laid out as
    the file lays them out (a tagger trained briefly on them finds entities)."""
    text = (shared_data / "chinese" / "msra" / "train.txt").read_text("utf-8")
    blocks = [b for b in text.split("\n\n") if "\tB-" in b][:SENTENCES]
    path = tmp_path_factory.mktemp("msra") / "train.txt"
    path.write_text("\n\n".join(blocks) + "\n", "utf-8")
    return path


def _iobes(tags: list[str]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        follows = i + 1 < len(tags) and tags[i + 1] == "I-" + tag[2:]
        if tag.startswith("B-"):
            out.append(tag if follows else "S-" + tag[2:])
        elif tag.startswith("I-"):
            out.append(tag if follows else "E-" + tag[2:])
        else:
            out.append(tag)
    return out


def _iob1(tags: list[str]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        after_same = i > 0 and tags[i - 1] != "O" and tags[i - 1][2:] == tag[2:]
        out.append("I-" + tag[2:] if tag.startswith("B-") and not after_same else tag)
    return out


def _conlleval(path) -> dict:
    lines = path.read_text("utf-8").splitlines()
    return conlleval.evaluate(lines)


@pytest.mark.full
def test_msra_from_random_weights_scores_as_conlleval(msra, shared_data, tmp_path):
    """main.py on one CPU device (not the suite's 8 fake ones, which make a step 4x slower):
    300 steps of a tiny random encoder find entities, and the scores equal conlleval's."""
    vocab = shared_data / "vocab" / "bert-base-chinese-vocab.txt"
    flags = {"train_file": msra, "tokenizer": vocab, "train.batch_size": 16, "train.steps": 300,
             "train.learning_rate": 2e-3, "train.pack_length": 128, "train.log_every": 100,
             "train.checkpoint_every": 300}  # fmt: skip
    command = [
        sys.executable,
        str(ROOT / "main.py"),
        "--config=configs/tag.py:size=tiny",
        f"--workdir={tmp_path}",
        *(f"--config.{k}={v}" for k, v in flags.items()),
    ]
    env = dict(os.environ, XLA_FLAGS="")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    dev = json.loads((tmp_path / "eval_results.json").read_text())["dev"]
    reference = _conlleval(tmp_path / "predictions" / "dev.txt")
    chunks = reference["overall"]["chunks"]
    assert chunks["stats"]["pred"] > 20, chunks  # the tagger finds entities: a real comparison
    assert dev["precision"] == pytest.approx(chunks["evals"]["prec"], abs=1e-12)
    assert dev["recall"] == pytest.approx(chunks["evals"]["rec"], abs=1e-12)
    assert dev["f1"] == pytest.approx(chunks["evals"]["f1"], abs=1e-12)
    assert dev["accuracy"] == pytest.approx(reference["overall"]["tags"]["evals"]["rec"])
    for entity_type, scores in reference["slots"]["chunks"].items():
        if scores["stats"]["pred"]:
            assert dev[f"f1_{entity_type}"] == pytest.approx(scores["evals"]["f1"], abs=1e-12)
    assert dev["f1"] > 0.1  # it learned entities in 300 steps from random weights
    _predict_equals_the_job_and_transformers(tmp_path, vocab)


def _written_sentences(path) -> list[tuple[list[str], list[str]]]:
    """(tokens, predicted tags) of each sentence of a `token gold predicted` file."""
    blocks = [b for b in path.read_text("utf-8").split("\n\n") if b.strip()]
    rows = [[line.split(" ") for line in b.splitlines()] for b in blocks]
    return [([r[0] for r in row], [r[2] for r in row]) for row in rows]


def _predict_equals_the_job_and_transformers(workdir, vocab):
    """bert.predict on the dev sentences finds the job's entities; on raw text it finds what
    transformers' token-classification pipeline (aggregation "first") finds on the export."""
    written = _written_sentences(workdir / "predictions" / "dev.txt")
    predictor = predict.Predictor(str(workdir))
    found = predictor([{"tokens": tokens} for tokens, _ in written])
    for (tokens, tags), result in zip(written, found, strict=True):
        starts = np.cumsum([0] + [len(t) + 1 for t in tokens])
        want = [(kind, int(starts[a]), int(starts[b - 1] + len(tokens[b - 1])))
                for kind, a, b in metrics.get_chunks(tags)]  # fmt: skip
        assert [(e["entity_group"], e["start"], e["end"]) for e in result["entities"]] == want
    unknown = tokenizers.load_tokenizer(vocab).unk_id
    texts = ["".join(tokens) for tokens, _ in written]
    texts = [t for t in texts if unknown not in predictor.model.tokenizer.encode_ids(t)][:40]
    workdirs.export_workdir(workdir, workdir / "hf")
    tagger = transformers.pipeline("token-classification", model=str(workdir / "hf"),
                                   aggregation_strategy="first", device=-1)  # fmt: skip
    ours = predictor(texts)
    assert sum(len(r["entities"]) for r in ours) > 10
    for mine, theirs in zip(ours, tagger(texts), strict=True):
        spans = [(e["entity_group"], e["start"], e["end"]) for e in mine["entities"]]
        assert spans == [(e["entity_group"], e["start"], e["end"]) for e in theirs]
        scores = [e["score"] for e in mine["entities"]]
        assert scores == pytest.approx([float(e["score"]) for e in theirs], abs=1e-5)


def test_other_schemes_and_jsonl_read_as_the_same_sentences(msra, tmp_path):
    sentences = tagging.read_tagged(str(msra))
    assert len(sentences) == SENTENCES and {t for s in sentences for t in s.tags} >= {"B-PER"}
    for name, convert in (("iobes", _iobes), ("iob1", _iob1)):
        path = tmp_path / f"{name}.txt"
        path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s.words, convert(s.tags),
                                strict=True)) + "\n" for s in sentences), "utf-8")  # fmt: skip
        read = tagging.read_tagged(str(path), scheme=name)
        assert [s.words for s in read] == [s.words for s in sentences]
        assert [s.tags for s in read] == [convert(s.tags) for s in sentences]
        # conlleval's rules find the same entities in every scheme
        assert metrics.conll_scores([s.tags for s in read], [s.tags for s in sentences])["f1"] == 1
    jsonl = tmp_path / "chars.jsonl"
    jsonl.write_text("".join(json.dumps({"text": "".join(s.words), "labels": s.tags},
                                        ensure_ascii=False) + "\n" for s in sentences))  # fmt: skip
    read = tagging.read_tagged(str(jsonl), fields=("text", "labels"))
    assert read == sentences  # a string of characters is read as one token per character


def test_scores_equal_conlleval_on_perturbed_predictions(msra, tmp_path):
    """Random tag errors in every scheme: our entity scores equal conlleval's."""
    sentences = tagging.read_tagged(str(msra))
    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    predicted = [[t if rng.random() > 0.1 else tags[rng.integers(len(tags))] for t in s.tags]
                 for s in sentences]  # fmt: skip
    for convert in (lambda t: t, _iobes, _iob1):
        gold = [convert(s.tags) for s in sentences]
        guess = [convert(p) for p in predicted]
        path = tmp_path / "predictions.txt"
        ner.write_conll_predictions(path, [ner.Sentence(s.words, g) for s, g in
                                           zip(sentences, gold, strict=True)], guess)  # fmt: skip
        reference = _conlleval(path)["overall"]["chunks"]["evals"]
        ours = metrics.conll_scores(guess, gold)
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(
            (reference["prec"], reference["rec"], reference["f1"]), abs=1e-12)  # fmt: skip


BAD = [
    ("iob2", "a\tO\nb\tI-PER\n", r"bad.txt:2: tag 'I-PER' follows 'O'; IOB2 starts with B-"),
    ("iob1", "a\tO\nb\tB-PER\n", r"bad.txt:2: .*IOB1 starts with I- \(B- after O is IOB2"),
    ("iobes", "a\tB-PER\nb\tO\n", r"bad.txt:2: tag 'O' follows inside the IOBES entity 'B-PER'"),
    ("iobes", "a\tB-PER\nb\tI-PER\n\n", r"bad.txt:2: the sentence ends inside the IOBES entity"),
    ("iobes", "a\tS-PER\nb\tE-PER\n", r"bad.txt:2: tag 'E-PER' follows 'S-PER'; IOBES is"),
    ("iob2", "a\tE-PER\n", r"bad.txt:1: tag 'E-PER' is not IOB2"),
]


@pytest.mark.parametrize("scheme, content, message", BAD)
def test_a_tag_out_of_place_names_its_line(scheme, content, message, tmp_path):
    (tmp_path / "bad.txt").write_text(content)
    with pytest.raises(UserError, match=message):
        tagging.read_tagged(str(tmp_path / "bad.txt"), scheme=scheme)


def test_msra_stray_entity_starts_stop_or_are_repaired_as_conlleval_reads_them(
    shared_data, tmp_path
):
    """MSRA's sentences 17,164 to 17,166 start inside a name, with I-PER (three of the six such
    sentences in the file): IOB2 checking stops at the first one's line, and tag_errors=repair
    reads each as B-PER, so that conlleval finds the same entities in the repaired tags as in
    the file's."""
    text = (shared_data / "chinese" / "msra" / "train.txt").read_text("utf-8")
    path = tmp_path / "msra.txt"
    path.write_text("".join(s + "\n\n" for s in text.split("\n\n")[17_160:17_170]), "utf-8")
    with pytest.raises(UserError, match=r"msra.txt:\d+: tag 'I-PER' follows 'O'; IOB2 starts "
                       r"with B- .*config.tag_errors=repair"):  # fmt: skip
        tagging.read_tagged(str(path))
    repaired = [t for sentence in tagging.read_tagged(str(path), tag_errors="repair")
                for t in [*sentence.tags, ""]]  # fmt: skip
    lines = [line.split("\t") if line else ["", ""] for line in  # a blank line ends a sentence
             path.read_text("utf-8").splitlines()]  # fmt: skip
    changed = [(o, r) for (_, o), r in zip(lines, repaired, strict=True) if o != r]
    assert changed == [("I-PER", "B-PER")] * 3
    rows = [f"{w} {o} {r}".strip() for (w, o), r in zip(lines, repaired, strict=True)]
    chunks = conlleval.evaluate(rows)["overall"]["chunks"]
    assert chunks["stats"]["correct"] == chunks["stats"]["gold"] == chunks["stats"]["pred"] > 0


def test_bad_jsonl_and_settings_are_one_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: 2 tokens but 1 tags"):
        tagging.read_tagged(str(path))
    path.write_text('{"tokens": ["a", "b"], "tags": ["O", "I-X"]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: token 1: tag 'I-X' follows 'O'"):
        tagging.read_tagged(str(path))
    with pytest.raises(UserError, match=r"config.tag_scheme='bio': expected one of"):
        tagging.read_tagged(str(path), scheme="bio")
    config = tag_config.get_config()
    with pytest.raises(UserError, match=r"config.train_file is empty"):
        tag_job.run(config, str(tmp_path / "run"))
