"""The sentence-embedding jobs on ModernBERT (a small random ModernBertForMaskedLM directory in
answerdotai/ModernBERT-base's layout: byte-level BPE tokenizer.json with [CLS] text [SEP], no
token types, no pooler, local and global layers), against sentence-transformers 5.x as the
reference: our embeddings equal a `SentenceTransformer` built from the same directory; training
(cosine loss) raises the STS dev Spearman and its sentence-transformers export gives our
embeddings; the STS job's Spearman is the one scipy computes from sentence-transformers'
embeddings; retrieval training and evaluation give `InformationRetrievalEvaluator`'s figures."""

import csv
import json
import pathlib

import numpy as np
import pytest
import scipy.stats
import tokenizers as hf_tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util
from test_retrieval_job import retrieval_evaluator
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from bert import embed, pretrained
from bert.export import cli
from bert.jobs import embeddings as embeddings_job
from bert.jobs import sts as sts_job
from bert.tasks import squad_pairs
from configs import embeddings as embeddings_config
from configs import sts as sts_config

TOLERANCE = 1e-5  # max abs difference of the embeddings against sentence-transformers'
SEQ = 32  # tokens per sentence: the long sentence below is cut
HIDDEN = 32
MODEL = dict(hidden_size=HIDDEN, num_hidden_layers=3, num_attention_heads=2,
             intermediate_size=48, max_position_embeddings=128, local_attention=8,
             global_attn_every_n_layers=2, reference_compile=False)  # fmt: skip
SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # ModernBERT's, after its BPE tokens
SENTENCES = [
    "A man is playing a guitar.",
    "Hi",
    "The new movie is awesome, I loved every minute of it! " * 5,  # beyond SEQ tokens
    "",
    "Naïve café déjà vu, 東京 and emoji 😀 [MASK] literal [SEP] tokens.",
    "Paris is the capital and most populous city of France.",
]
TO_ST = "--to=sentence-transformers"
DEV_PAIRS = 200  # the first STS benchmark dev pairs, scored by the jobs and the reference


def _sts_rows(path: pathlib.Path) -> list[tuple[float, str, str]]:
    """(score, sentence1, sentence2) per line, read as the data's README says (tab-separated,
    no quoting, columns 4, 5, 6): independently of bert/tasks/sts.py."""
    with open(path, encoding="utf-8", newline="") as f:
        return [(float(r[4]), r[5], r[6]) for r in csv.reader(f, delimiter="\t", quoting=3)]


@pytest.fixture(scope="module")
def modern_dir(shared_data, tmp_path_factory) -> pathlib.Path:
    """A random ModernBertForMaskedLM (norm weights away from 1; its vocabulary padded to a
    multiple of 64) with a byte-level BPE tokenizer.json trained on STS benchmark train, saved
    as transformers saves ModernBERT's (GPT-NeoX's two tokens first, the specials after the BPE
    vocabulary; no token_type_ids)."""
    texts = [t for _, *pair in _sts_rows(shared_data / "stsbenchmark" / "sts-train.csv")
             for t in pair]  # fmt: skip
    tokenizer = hf_tokenizers.Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=["<|endoftext|>", "<|padding|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(
        [hf_tokenizers.AddedToken(t, special=True, normalized=False, lstrip=t == "[MASK]")
         for t in SPECIALS]
    )  # fmt: skip
    ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("modernbert")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        pad_token="[PAD]", unk_token="[UNK]", clean_up_tokenization_spaces=True,
        model_input_names=["input_ids", "attention_mask"], model_max_length=8192,
    )  # fmt: skip
    fast.save_pretrained(directory)
    config = transformers.ModernBertConfig(
        vocab_size=-(-len(fast) // 64) * 64,  # rows past the tokenizer's, as ModernBERT pads them
        pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"], **MODEL,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def dev(shared_data) -> list[tuple[float, str, str]]:
    return _sts_rows(shared_data / "stsbenchmark" / "sts-dev.csv")[:DEV_PAIRS]


def reference(path: pathlib.Path, pooling: str = "mean", normalize: bool = False):
    """sentence-transformers' own model from an HF directory: Transformer, Pooling[, Normalize]."""
    transformer = Transformer(str(path), max_seq_length=SEQ)
    assert type(transformer.auto_model).__name__ == "ModernBertModel"
    modules = [transformer, Pooling(HIDDEN, pooling)] + ([Normalize()] if normalize else [])
    return SentenceTransformer(modules=modules, device="cpu")


def encode(model: SentenceTransformer, sentences) -> np.ndarray:
    return model.encode(list(sentences), batch_size=64, convert_to_numpy=True)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    error = float(np.max(np.abs(got - want)))
    assert error <= TOLERANCE, f"embeddings differ by {error:.2e}"


def cosines(model: SentenceTransformer, rows) -> np.ndarray:
    """The cosine of each pair's sentence-transformers embeddings."""
    first, second = (encode(model, [r[i] for r in rows]) for i in (1, 2))
    cosine = np.sum(first * second, -1) / np.linalg.norm(first, axis=-1)
    return cosine / np.linalg.norm(second, axis=-1)


def sts_figures(model: SentenceTransformer, rows) -> dict[str, float]:
    """scipy's Spearman and Pearson of the cosine against the gold scores, and
    sentence-transformers' CosineSimilarityLoss (the mean squared error of the cosine against
    the score / 5), from sentence-transformers' embeddings of `rows`."""
    cosine, gold = cosines(model, rows), np.array([r[0] for r in rows])
    return {"spearman": float(scipy.stats.spearmanr(cosine, gold).statistic),
            "pearson": float(scipy.stats.pearsonr(cosine, gold).statistic),
            "loss": float(np.mean((cosine - gold / 5) ** 2))}  # fmt: skip


def scalars(workdir: pathlib.Path, tag: str) -> list[float]:
    """A run's logged values of `tag`, in step order."""
    (events,) = workdir.glob("events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(str(events), size_guidance={"tensors": 0})
    accumulator.Reload()  # every value (a size guidance of 0), not a sample of 10
    tensors = sorted(accumulator.Tensors(tag), key=lambda e: e.step)
    return [float(tensor_util.make_ndarray(e.tensor_proto)) for e in tensors]


@pytest.mark.parametrize(
    "pooling, normalize",
    [("mean", False), *[pytest.param(*case, marks=pytest.mark.full)
                        for case in (("mean", True), ("cls", False), ("max", True))]],
)  # fmt: skip
def test_embeddings_equal_sentence_transformers(modern_dir, pooling, normalize):
    """The same ids as sentence-transformers' tokenization (no token_type_ids), and embeddings
    within 1e-5 (padding, truncation, an empty sentence, local windows narrower than the rows)."""
    model = pretrained.load(str(modern_dir))
    assert model.config.type_vocab_size == 0 and "pooler" not in model.encoder
    theirs = reference(modern_dir, pooling, normalize)
    tokenized = theirs.preprocess(SENTENCES)
    assert "token_type_ids" not in tokenized
    for row, mask, sentence in zip(tokenized["input_ids"].tolist(),
                                   tokenized["attention_mask"].tolist(), SENTENCES,
                                   strict=True):  # fmt: skip
        ids, _ = model.tokenizer.build_inputs(model.tokenizer.encode_ids(sentence)[: SEQ - 2])
        assert row[: sum(mask)] == ids
    ours = embed.embed(model, SENTENCES, max_seq_length=SEQ, pooling=pooling, normalize=normalize)
    assert_close(ours, encode(theirs, SENTENCES))


def test_sts_job_gives_the_spearman_of_sentence_transformers_embeddings(
    modern_dir, dev, shared_data, tmp_path
):
    """configs/sts.py on the ModernBERT directory (first 200 dev pairs): its Spearman and
    Pearson are scipy's from sentence-transformers' embeddings of the same directory."""
    lines = (shared_data / "stsbenchmark" / "sts-dev.csv").read_text("utf-8").split("\n")
    (tmp_path / "dev.csv").write_text("\n".join(lines[:DEV_PAIRS]) + "\n", encoding="utf-8")
    config = sts_config.get_config()
    config.init_from, config.eval_file = str(modern_dir), str(tmp_path / "dev.csv")
    config.max_seq_length = SEQ
    results = sts_job.run(config, str(tmp_path / "job"))
    assert results["pairs"] == DEV_PAIRS
    assert json.loads((tmp_path / "job" / "sts_results.json").read_text()) == results
    want = sts_figures(reference(modern_dir), dev)
    assert results["spearman"] == pytest.approx(want["spearman"], abs=1e-6)
    assert results["pearson"] == pytest.approx(want["pearson"], abs=1e-6)


def _training(modern_dir, shared_data, steps: int):
    config = embeddings_config.get_config()
    config.init_from = str(modern_dir)
    sts = shared_data / "stsbenchmark"
    config.train_file, config.train_format = str(sts / "sts-train.csv"), "stsbenchmark"
    config.eval_file, config.eval_limit = str(sts / "sts-dev.csv"), DEV_PAIRS
    config.loss, config.normalize = "cosine", False  # regression of the cosine on the scores
    config.max_seq_length, config.pad_to_multiple_of = SEQ, 16
    config.train_limit, config.eval_batch_size = 16 * steps, 64
    t = config.train
    t.steps, t.learning_rate, t.log_every = steps, 2e-3, 1
    t.checkpoint_every, t.async_checkpoints = steps, False
    return config


def test_training_raises_sts_spearman_and_exports_to_sentence_transformers(
    modern_dir, dev, shared_data, tmp_path
):
    """20 steps of the cosine loss on STS benchmark train (packed rows, dropout as configured):
    the training loss (mean of the last 5 steps against the first 5) falls by more than 15%;
    `--to=sentence-transformers` writes a ModernBertModel directory that sentence-transformers
    loads with our embeddings (1e-5) and the run's dev Spearman (1e-6), and that we read back
    with its settings and the same embeddings; on the first 200 dev
    pairs, from sentence-transformers' embeddings, the Spearman rises by more than 0.1 over the
    starting directory's and the cosine loss falls by more than 15%."""
    before = sts_figures(reference(modern_dir), dev)
    results = embeddings_job.run(_training(modern_dir, shared_data, 20), str(tmp_path / "run"))
    assert results["step"] == 20
    losses = scalars(tmp_path / "run", "train/loss")
    assert len(losses) == 20
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.85 * first, losses  # measured: 0.089 -> 0.060
    trained = pretrained.load(str(tmp_path / "run"))
    assert "pooler" not in trained.encoder and trained.task == "embeddings"
    assert (trained.pooling, trained.normalize, trained.max_seq_length) == ("mean", False, SEQ)

    assert cli.main([str(tmp_path / "run"), str(tmp_path / "st"), TO_ST]) == 0
    hf_config = json.loads((tmp_path / "st" / "config.json").read_text())
    assert hf_config["architectures"] == ["ModernBertModel"]
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert exported.max_seq_length == SEQ
    ours = embed.embed(trained, SENTENCES, max_seq_length=SEQ, pooling="mean", normalize=False)
    assert_close(ours, encode(exported, SENTENCES))
    back = pretrained.load(str(tmp_path / "st"))  # and read back as a ModernBERT encoder
    assert (back.pooling, back.normalize, back.max_seq_length) == ("mean", False, SEQ)
    assert_close(embed.embed(back, SENTENCES, max_seq_length=SEQ, normalize=False), ours)
    after = sts_figures(exported, dev)
    assert after["spearman"] == pytest.approx(results["sts_dev"]["spearman"], abs=1e-6)
    assert after["spearman"] > before["spearman"] + 0.1, (before, after)  # 0.454 -> 0.658
    assert after["loss"] < 0.85 * before["loss"], (before, after)  # measured: 0.105 -> 0.070


@pytest.mark.full
def test_mnrl_retrieval_equals_sentence_transformers_evaluator(modern_dir, shared_data, tmp_path):
    """MNRL on question/paragraph pairs of all but the last 2 SQuAD dev articles; the held-out
    articles' retrieval figures, from the run and from configs/sts.py's mode=retrieval, are
    `InformationRetrievalEvaluator`'s on the sentence-transformers export."""
    config = _training(modern_dir, shared_data, 10)
    config.train_file = config.retrieval.squad_file = str(shared_data / "squad" / "dev-v1.1.json")
    config.train_format, config.train_kind, config.eval_file = "squad", "pairs", ""
    config.loss, config.normalize, config.max_seq_length = "mnrl", True, 64
    config.retrieval.held_out_articles = 2
    got = embeddings_job.run(config, str(tmp_path / "run"))["retrieval"]
    assert cli.main([str(tmp_path / "run"), str(tmp_path / "st"), TO_ST]) == 0
    _, data = squad_pairs.split_by_article(config.retrieval.squad_file, 2)
    want = retrieval_evaluator(data)(SentenceTransformer(str(tmp_path / "st"), device="cpu"))
    sts = sts_config.get_config("mode=retrieval")
    sts.init_from, sts.retrieval, sts.max_seq_length = str(tmp_path / "run"), config.retrieval, 64
    again = sts_job.run(sts, str(tmp_path / "job"))
    assert (again["queries"], again["corpus"]) == (378, 90)
    assert set(want) == set(got) - {"queries", "corpus"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), (key, got[key], value)
        assert again[key] == pytest.approx(value, abs=1e-6), (key, again[key], value)
