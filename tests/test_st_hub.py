"""sentence-transformers directories and the Hub, without a network: a Hub model id that is a
sentence-transformers repository (tests/hub_server.py) loads with its pooling and normalisation,
fetching its module files and nothing it does not read; `--to=sentence-transformers
--push_to_hub` uploads the whole directory (tests/hub_upload_server.py). Both go through the
real huggingface_hub client in a fresh process, as a user's run would."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import reference
import transformers
from hub_server import HubServer
from hub_upload_server import FakeHub
from sentence_transformers import SentenceTransformer

from bert import embed, pretrained
from bert.export import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPO = "org/tiny-sentence-model"
SENTENCES = ["the quick brown fox", "a lazy dog naps", "then"]
# Files a sentence-transformers repository often holds that this project never reads.
DECOYS = {name: b"not read" for name in ("pytorch_model.bin", "onnx/model.onnx", "README.md",
                                         "openvino/openvino_model.xml")}  # fmt: skip
# Loads argv[1] with bert/pretrained.py; prints its pooling, normalisation and embeddings' sum.
LOAD = """
import sys
from bert import pretrained
from bert import embed
model = pretrained.load(sys.argv[1])
vectors = embed.embed(model, sys.argv[2:], pooling=model.pooling, normalize=model.normalize)
print(model.pooling, model.normalize, model.max_seq_length, repr(float(vectors.sum())))
"""


def _vocab() -> list[str]:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "then", "naps", "a"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *words, *letters]
    tokens += [f"##{c}" for c in letters]
    return tokens + [f"[unused{i}]" for i in range(99 - len(tokens))]  # odd_vocab's 99


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory) -> pathlib.Path:
    """A random tiny BERT with a WordPiece tokenizer, exported with max pooling, normalised."""
    root = tmp_path_factory.mktemp("tiny")
    reference.hf_model("odd_vocab", seed=3).save_pretrained(root / "hf")
    (root / "vocab.list").write_text("\n".join(_vocab()) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(root / "vocab.list"), do_lower_case=True)
    tokenizer.save_pretrained(root / "hf")
    argv = [str(root / "hf"), str(root / "st"), "--to=sentence-transformers", "--pooling=max",
            "--normalize", "--max_seq_length=24"]  # fmt: skip
    assert cli.main(argv) == 0
    return root / "st"


def _env(home: pathlib.Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.pop("TRANSFORMERS_OFFLINE", None)
    return env | {"HF_HOME": str(home), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0",
                  "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip


def test_hub_id_of_a_sentence_transformers_repo_keeps_its_modules(sentence_model, tmp_path):
    files = HubServer.files_of(sentence_model)
    with HubServer() as server:
        server.add_repo(REPO, files | DECOYS)
        done = subprocess.run(
            [sys.executable, "-c", LOAD, REPO, *SENTENCES], cwd=ROOT,
            env=_env(tmp_path / "home", server.endpoint), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        asked = server.asked_for()
    assert done.returncode == 0, done.stderr[-3000:]
    pooling, normalize, length, total = done.stdout.split()
    assert (pooling, normalize, length) == ("max", "True", "24")
    want = SentenceTransformer(str(sentence_model), device="cpu").encode(SENTENCES)
    assert abs(float(total) - float(want.sum())) <= 1e-4
    assert asked == set(files)  # every file of ours, no decoy


def test_push_to_hub_uploads_the_sentence_transformers_directory(sentence_model, tmp_path):
    hub = FakeHub()
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint,
           "HF_TOKEN": "hf_fake", "HF_HOME": str(tmp_path / "hf_home")}  # fmt: skip
    out = tmp_path / "st"
    args = ["-m", "bert.convert", str(sentence_model), str(out), "--to=sentence-transformers"]
    try:
        result = subprocess.run(
            [sys.executable, *args, "--push_to_hub=org/tiny-st"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        hub.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.repos == [("org/tiny-st", "Bearer hf_fake")] and not hub.unknown
    written = HubServer.files_of(out)
    assert hub.files == written and {"modules.json", "1_Pooling/config.json"} <= set(written)
    # Re-exported from a sentence-transformers directory: its settings carried over.
    loaded = pretrained.load(str(out))
    assert (loaded.pooling, loaded.normalize, loaded.max_seq_length) == ("max", True, 24)
    ours = embed.embed(loaded, SENTENCES, pooling="max", normalize=True)
    want = SentenceTransformer(str(out), device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(ours, want, atol=1e-5)
