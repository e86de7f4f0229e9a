"""TFDS text data sets as corpus documents, one example per document (paragraphs at newlines).

TFDS's prepared copies on GCS are tried first (``try_gcs``) when no TFDS folder is given; TFDS
4.9.10 has that lookup switched off in its source (``gcs_utils._is_gcs_disabled``), so there
it changes nothing. Data sets that TFDS builds with Apache Beam (``wikipedia``, ``wiki40b``,
``c4``) are refused with a `UserError` naming what to read instead, unless already prepared.
"""

from collections.abc import Iterable, Iterator
from typing import Any

from input_pipeline import corpora
from input_pipeline.sentence_splitter import split_sentences
from util.errors import UserError


def read_tfds(
    name: str,
    split: str = "train",
    text_field: str = "text",
    data_dir: corpora.PathLike | None = None,
    download: bool = False,
    sentence_split: bool = True,
    stats: corpora.CorpusStats | None = None,
) -> Iterator[corpora.Document]:
    """Streams a TFDS text data set, one example per document (paragraphs at newlines).

    Args:
      name: the TFDS name, e.g. "wikipedia/20230601.en".
      split: the TFDS split, e.g. "train" or "train[:1%]".
      text_field: the feature holding the text.
      data_dir: where TFDS keeps its data (its default when None).
      download: let TFDS download and prepare the data set if it is missing; TFDS's prepared
        copies on GCS are tried first (``try_gcs``) when no ``data_dir`` is given.

    Raises:
      UserError: the data set is built with Apache Beam and is not prepared in ``data_dir``;
        the message names what to read instead.
      RuntimeError: TFDS cannot load it (e.g. offline, not prepared); the message says how to
        use local text files instead.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415 (heavy; only this reader needs it)

    stats = corpora.CorpusStats() if stats is None else stats
    _refuse_beam_builder(tfds, name, data_dir)
    try:
        dataset = tfds.load(
            name, split=split, data_dir=data_dir, download=download, try_gcs=data_dir is None
        )
    except Exception as e:  # TFDS raises many kinds: not found, no network, not prepared
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise RuntimeError(
            f"TFDS could not load {name!r} split {split!r} ({reason}). Without network access, "
            "either prepare it with TFDS on a connected machine and pass its data_dir, or put "
            "the text in local files and read those with read_corpus('path/*.txt', format), "
            "format being 'text' (one sentence per line), 'paragraphs' (one paragraph per "
            "line), 'jsonl', 'wikiextractor' or 'parquet'"
        ) from e
    return _read_tfds_examples(tfds.as_numpy(dataset), name, text_field, sentence_split, stats)


def _refuse_beam_builder(tfds: Any, name: str, data_dir: corpora.PathLike | None) -> None:
    """Raises a UserError if TFDS would need an Apache Beam pipeline to prepare ``name``.

    Known from the builder class alone (TFDS's own registry: nothing is downloaded); a data
    set already prepared in ``data_dir`` (or TFDS's default folder) loads without Beam.
    """
    from tensorflow_datasets.core import naming  # noqa: PLC0415

    try:
        base = naming.parse_builder_name_kwargs(name)[0]
        builder_class = tfds.builder_cls(str(base))
    except Exception:  # an unknown name: tfds.load reports it
        return
    if not issubclass(builder_class, tfds.core.BeamBasedBuilder):
        return
    try:
        if tfds.builder(name, data_dir=data_dir).is_prepared():
            return
    except Exception:  # e.g. an unknown config: tfds.load reports it
        return
    raise UserError(
        f"TFDS {name!r} is an Apache Beam data set: TFDS prepares it only with apache_beam "
        "and a Beam run over the full source dump (days on one machine), and none is prepared "
        f"in {data_dir or 'the TFDS data folder'}. Read Parquet from the Hugging Face Hub "
        "instead, e.g. data.input='hf://datasets/wikimedia/wikipedia/20231101.en/train-*.parquet' "
        "with data.format=parquet (or local copies of those files)"
    )


def _read_tfds_examples(
    examples: Iterable[dict],
    name: str,
    text_field: str,
    sentence_split: bool,
    stats: corpora.CorpusStats,
) -> Iterator[corpora.Document]:
    split = split_sentences if sentence_split else corpora.identity_split
    for example in examples:
        if text_field not in example:
            raise UserError(f"TFDS {name!r} has no feature {text_field!r}: {sorted(example)}")
        text = example[text_field]
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        document = corpora.text_document(str(text), split)
        if document:
            stats.documents += 1
            stats.sentences += len(document)
            yield document
        else:
            stats.skipped_documents += 1
