"""The parallel half of `prepare`: tokenize and serialise chunks of documents in worker processes.

Kept apart from `prepare` so that a worker process imports only what it needs (tokenizers,
numpy, the corpus splitter): neither TensorFlow nor anything of the parent's bookkeeping.

Parallelism: a ``spawn`` process pool (a fresh interpreter per worker, so no fork after the
tokenizer library has started its threads), each worker tokenizing single-threaded
(``TOKENIZERS_PARALLELISM`` off, SentencePiece with one thread) since the processes already
use every core; measured here, that beats one process with the library's own threads. Chunks
are submitted in order and their results taken in order, at most ``2 * workers`` in flight.
"""

import collections
import dataclasses
import functools
import itertools
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from concurrent import futures

import numpy as np

from input_pipeline import record_encoder, tokenizers, word_segmenter
from input_pipeline.sentence_splitter import split_sentences
from util import paths


@dataclasses.dataclass(frozen=True)
class ChunkResult:
    """The framed records of one chunk, grouped by shard, with counts."""

    shards: list[tuple[int, bytes, int, int, int]]  # (shard, records, documents, sentences, tokens)
    documents_without_tokens: int
    empty_sentences: int


# WordPiece matches a literal "[SEP]" in text as the special token and tokenizes the text on each
# side of it independently, so a document's sentences joined by it tokenize as the sentences one
# by one with a [SEP] id between them; one call per document is faster than one per sentence.
_SEPARATOR = " [SEP] "
_LITERAL = "[SEP]"
_PROBES = ("Hello, world!", "na\u00efve caf\u00e9.", "\u6771\u4eac\u306f", "a [SEP", "] b")
_PROBES += ("\u0301x \u00e9", "[CLS] [MASK] [sep] [UNK]", "A" * 120, "x", "\u00a0end \t")


def _joins_sentences(tokenizer: tokenizers.Tokenizer) -> bool:
    """Whether ``tokenizer`` may encode a document's sentences joined by " [SEP] " (see above)."""
    if not isinstance(tokenizer, tokenizers.WordPieceTokenizer):
        return False
    expected = []
    for probe in _PROBES:
        expected += [*tokenizer.encode_ids(probe), tokenizer.sep_id]
    return tokenizer.encode_ids(_SEPARATOR.join(_PROBES)) == expected[:-1]


class ChunkTokenizer:
    """Tokenizes and serialises chunks of documents; make one per process (it holds tables).

    With a word segmenter (`word_segmenter.NAMES`), the word starts are its words' (Chinese
    whole-word masking) and each sentence is tokenized on its own."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, segmenter: str = ""):
        self.tokenizer = tokenizer
        self._crc = record_encoder.Crc32c()
        self._segmenter = word_segmenter.load(segmenter)
        self._join = self._segmenter is None and _joins_sentences(tokenizer)

    def _tokenize(self, documents: list[list[str]], sentence_split: bool):
        """Token ids, word starts (uint8), tokens per sentence, and sentences per document."""
        texts: list[str] = []
        covered: list[int] = []  # sentences in each text
        per_document = np.empty(len(documents), np.int64)
        for d, document in enumerate(documents):
            if sentence_split:
                document = [s for paragraph in document for s in split_sentences(paragraph)]
            per_document[d] = len(document)
            if self._join and len(document) > 1 and not any(_LITERAL in s for s in document):
                texts.append(_SEPARATOR.join(document))
                covered.append(len(document))
            else:
                texts.extend(document)
                covered.extend([1] * len(document))
        if self._segmenter is None:
            encodings = self.tokenizer.encode_batch(texts)
        else:
            encodings = self._segmenter.encode_batch(self.tokenizer, texts)
        del texts
        text_lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        total = int(text_lengths.sum())
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64, total)
        word_starts = itertools.chain.from_iterable(e.word_starts for e in encodings)
        starts = np.fromiter(word_starts, np.uint8, total)
        del encodings
        covered_array = np.asarray(covered, np.int64)
        if not (covered_array > 1).any():
            return ids, starts, text_lengths, per_document
        # Cut joined texts at their [SEP] ids: token t of text x belongs to sentence
        # first_sentence[x] + (separators of x before t).
        text_of_token = np.repeat(np.arange(len(covered)), text_lengths)
        is_separator = (covered_array > 1)[text_of_token] & (ids == self.tokenizer.sep_id)
        separators = np.bincount(text_of_token[is_separator], minlength=len(covered))
        if (separators != covered_array - 1).any():
            raise RuntimeError(f"{self.tokenizer} did not keep the [SEP] between sentences")
        before_text = np.cumsum(separators) - separators
        first_sentence = np.cumsum(covered_array) - covered_array
        within = np.cumsum(is_separator) - is_separator - before_text[text_of_token]
        sentence = (first_sentence[text_of_token] + within)[~is_separator]
        lengths = np.bincount(sentence, minlength=int(covered_array.sum()))
        return ids[~is_separator], starts[~is_separator], lengths, per_document

    def encode_chunk(
        self,
        documents: list[list[str]],
        first_index: int,
        num_shards: int,
        sentence_split: bool,
    ) -> ChunkResult:
        """Tokenizes documents (lists of paragraphs) and frames their records by shard.

        Args:
          first_index: the reading-order index of ``documents[0]``; document
            ``first_index + d`` goes to shard ``(first_index + d) % num_shards``.
          sentence_split: cut each paragraph with `split_sentences`; False takes each
            item as a sentence.
        """
        ids, starts, lengths, per_document = self._tokenize(documents, sentence_split)
        nonempty = lengths > 0  # empty sentences are dropped, as records.encode_document does
        owner = np.repeat(np.arange(len(documents)), per_document)  # document of each sentence
        kept = np.bincount(owner[nonempty], minlength=len(documents))  # non-empty sentences
        written = np.flatnonzero(kept)
        payloads = record_encoder.encode_documents(ids, starts, lengths[nonempty], kept[written])
        framed = record_encoder.frame_records(payloads, self._crc)
        tokens = np.bincount(owner, weights=lengths, minlength=len(documents)).astype(np.int64)
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for position, d in enumerate(written.tolist()):
            groups[(first_index + d) % num_shards].append(position)
        shards = []
        for shard, positions in sorted(groups.items()):
            docs = written[positions]
            blob = b"".join(framed[p] for p in positions)
            counts = (len(positions), int(kept[docs].sum()), int(tokens[docs].sum()))
            shards.append((shard, blob, *counts))
        return ChunkResult(shards, len(documents) - len(written), int((~nonempty).sum()))


@dataclasses.dataclass(frozen=True)
class _TokenizerSpec:
    """What a worker needs to load the parent's tokenizer, single-threaded, and its segmenter."""

    path: str
    sentencepiece: bool
    lowercase: bool | None
    fingerprint: str
    segmenter: str


@functools.lru_cache(maxsize=1)
def _worker_encoder(spec: _TokenizerSpec) -> ChunkTokenizer:
    """The encoder of this worker process, made once per process."""
    if spec.sentencepiece:
        tokenizer = tokenizers.SentencePieceTokenizer(spec.path, num_threads=1)
    else:
        tokenizer = tokenizers.load_tokenizer(spec.path, spec.lowercase)
    if tokenizer.fingerprint() != spec.fingerprint:
        raise ValueError(f"tokenizer {spec.path} changed while the corpus was being prepared")
    return ChunkTokenizer(tokenizer, spec.segmenter)


def _init_worker(parent: int) -> None:
    # One tokenizer thread per worker process: the processes already use every core.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _die_with(parent)


def _die_with(parent: int) -> None:
    """On Linux, has the kernel kill this worker when the job's process dies, so a job killed
    during preparation leaves no workers running (elsewhere the pool's own shutdown only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the job died before the line above
        os._exit(1)


def _worker_task(
    spec: _TokenizerSpec, documents: list[list[str]], first: int, shards: int, split: bool
) -> ChunkResult:
    return _worker_encoder(spec).encode_chunk(documents, first, shards, split)


def chunks(
    documents: Iterable[list[str]], chunk_chars: int
) -> Iterator[tuple[int, list[list[str]]]]:
    """(index of the first document, documents) of about ``chunk_chars`` characters each."""
    chunk: list[list[str]] = []
    chars = first = 0
    for index, document in enumerate(documents):
        chunk.append(document)
        chars += sum(map(len, document))
        if chars >= chunk_chars:
            yield first, chunk
            chunk, chars, first = [], 0, index + 1
    if chunk:
        yield first, chunk


def encode_all(
    chunks: Iterable[tuple[int, list[list[str]]]],
    tokenizer: tokenizers.Tokenizer,
    workers: int,
    num_shards: int,
    sentence_split: bool,
    segmenter: str = "",
) -> Iterator[ChunkResult]:
    """The results of every chunk, in order, with at most ``2 * workers`` chunks in flight
    (``segmenter``: see `ChunkTokenizer`)."""
    if workers == 0:
        encoder = ChunkTokenizer(tokenizer, segmenter)
        for first, documents in chunks:
            yield encoder.encode_chunk(documents, first, num_shards, sentence_split)
        return
    spec = _TokenizerSpec(
        path=str(paths.absolute(tokenizer.path)),
        sentencepiece=isinstance(tokenizer, tokenizers.SentencePieceTokenizer),
        lowercase=getattr(tokenizer, "lowercase", None),
        fingerprint=tokenizer.fingerprint(),
        segmenter=segmenter,
    )
    if not spec.sentencepiece and tokenizer.path.suffix == ".json":
        spec = dataclasses.replace(spec, lowercase=None)  # a tokenizer.json sets its own
    context = multiprocessing.get_context("spawn")
    # concurrent.futures, not multiprocessing.Pool: a worker that dies (e.g. the OOM killer)
    # fails the run with BrokenProcessPool instead of leaving its task waiting forever.
    with futures.ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        pending: collections.deque[futures.Future] = collections.deque()
        try:
            for first, documents in chunks:
                task = (spec, documents, first, num_shards, sentence_split)
                pending.append(pool.submit(_worker_task, *task))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a failure waits for running chunks only
