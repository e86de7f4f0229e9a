"""Test set-up: 8 fake CPU devices, set before anything imports TensorFlow or JAX."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# transformers must not load its TensorFlow models (Keras 3 is installed, which they reject):
# sentence-transformers imports them through transformers.integrations otherwise.
os.environ.setdefault("USE_TF", "0")

import pathlib  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The real data sets beside the repository. Tests needing them skip without them on a
    user's clone, and fail in CI (CI=true), where the folder is always present."""
    if not SHARED_DATA.is_dir():
        message = f"real data folder {SHARED_DATA} is absent (see README: Tests)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{message}; CI must run every test that needs it")
        pytest.skip(message)
    return SHARED_DATA


TINY_HF = dict(  # a small random BERT over the real uncased WordPiece vocabulary
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


@pytest.fixture(scope="module")
def tiny_model(shared_data):
    """A tiny random HF BertForPreTraining (seed 0) of TINY_HF's sizes."""
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.BertForPreTraining(transformers.BertConfig(**TINY_HF)).eval()


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, tiny_model, shared_data):
    """The tiny model as an HF directory with the uncased vocab.txt beside it."""
    directory = tmp_path_factory.mktemp("tiny_hf")
    tiny_model.save_pretrained(directory)
    shutil.copyfile(shared_data / "vocab" / "bert-base-uncased-vocab.txt", directory / "vocab.txt")
    return directory
