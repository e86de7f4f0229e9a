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
