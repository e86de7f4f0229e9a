"""python -m bert.predict on a checkpoint without a task head: its sentence embeddings.
(Classification: tests/test_classify.py; tagging: tests/test_tag.py; question answering:
tests/test_finetune_jobs.py.)"""

import numpy as np
import pytest

from bert import embed, predict, pretrained


def test_an_encoder_without_a_task_head_gives_its_sentence_embeddings(tiny_hf):
    """Any other checkpoint embeds: mean pooling, normalised, as bert.embed computes it."""
    texts = ["a gorgeous movie .", "it 's a mess .", "a gorgeous movie ."]
    vectors = [r["embedding"] for r in predict.Predictor(str(tiny_hf))(texts)]
    want = embed.embed(pretrained.load(str(tiny_hf)), texts, max_seq_length=128)
    np.testing.assert_allclose(vectors, want, atol=1e-6)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert vectors[0] == vectors[2] and len(vectors[0]) == 32
