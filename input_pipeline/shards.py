"""Record shards of a prepared corpus: written with their checksums, verified, rewritten alone.

Every shard's CRC-32C is computed while it is written (the bytes are in memory then, and the
`google_crc32c` C library takes milliseconds for a whole corpus) and stored in the manifest
beside its size.
CRC-32C because it is what GCS stores for every object: on a `gs://` workdir the full check of a
shard is one metadata request, the same cost as its size, with no download.

Shard ``s`` of ``n`` holds documents ``s, s + n, s + 2n, ...`` of the inputs in reading order,
so the inputs, the config and the tokenizer recorded in the manifest decide it alone: it is
rewritten by reading every input again and tokenizing only its own documents (the others are
passed on as empty documents, which keep the numbering and cost nothing). What comes out is
compared with the record (size, checksum, documents, sentences, tokens) before it replaces
anything; a difference means something unrecorded changed, and `prepare` redoes everything.

A manifest of an older version has no checksums: each of its shards is checked once against the
CRC-32Cs of its own TFRecord framing (a length and a payload CRC per record), and the file's
checksum is then added to the manifest.
"""

import base64
import contextlib
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import google_crc32c
import numpy as np

from input_pipeline import corpora, prepare_workers, tokenizers
from input_pipeline.manifest import Manifest, sync_directory, write_manifest
from util import atomic, paths
from util.errors import UserError

VERIFY_MODES = ("checksum", "size")  # what `damaged` compares with the manifest
_READ_BLOCK = 8 << 20  # bytes read at a time when checksumming a local file
_MASK_DELTA = 0xA282EAD8  # TFRecord's CRC mask
_LOG = logging.getLogger(__name__)


class Mismatch(Exception):
    """A rewritten shard is not the one the manifest records (nothing was replaced)."""


def crc32c_hex(crc: int) -> str:
    """The manifest's spelling of a CRC-32C: 8 lowercase hex digits."""
    return f"{crc:08x}"


def file_crc32c(path: paths.PathLike) -> str:
    """The CRC-32C of a file (`crc32c_hex`), computed by reading it."""
    crc = 0
    with paths.open_read(path) as f:
        while block := f.read(_READ_BLOCK):
            crc = google_crc32c.extend(crc, block)
    return crc32c_hex(crc)


def framed_crc32c(path: paths.PathLike) -> str | None:
    """The CRC-32C of a TFRecord file (`crc32c_hex`) if every record matches the CRC-32Cs of
    its own framing (length and payload), else None: what certifies a shard that has no
    checksum on record (a manifest of an older version)."""
    crc = 0
    with paths.open_read(path) as f:
        while header := f.read(12):
            if len(header) < 12 or _masked(google_crc32c.value(header[:8])) != _u32(header[8:]):
                return None
            payload = f.read(int.from_bytes(header[:8], "little") + 4)
            if len(payload) < 4 or _masked(google_crc32c.value(payload[:-4])) != _u32(payload[-4:]):
                return None
            crc = google_crc32c.extend(google_crc32c.extend(crc, header), payload)
    return crc32c_hex(crc)


def _masked(crc: int) -> int:
    """TFRecord's masked CRC (rotated right by 15 bits, plus a constant)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _u32(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _stat(path: paths.PathLike) -> tuple[int, str | None] | None:
    """(size, CRC-32C if the store keeps one) of a file, or None if it is missing: one metadata
    request on an object store (GCS keeps every object's CRC-32C: no download)."""
    if not paths.is_remote(path):
        local = os.fspath(path)
        return (os.path.getsize(local), None) if os.path.isfile(local) else None
    fs, stripped = paths.filesystem(path)
    try:
        info = fs.info(stripped)
    except FileNotFoundError:
        return None
    if info.get("type") != "file":
        return None
    stored = info.get("crc32c")  # base64 of the big-endian value (GCS's JSON API)
    crc = crc32c_hex(int.from_bytes(base64.b64decode(stored), "big")) if stored else None
    return int(info["size"]), crc


def check_verify(verify: str) -> None:
    """Raises a `UserError` unless ``verify`` is one of `VERIFY_MODES`."""
    if verify not in VERIFY_MODES:
        raise UserError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")


def damaged(
    manifest: Manifest, verify: str, certified: dict[int, str] | None = None
) -> list[tuple[int, str]]:
    """The shards that are not as recorded: (index, what is wrong), in order.

    Args:
      verify: "size" compares sizes only; "checksum" also the CRC-32C of each shard, or, for
        a shard whose record has none (a manifest of an older version), the CRC-32Cs of every
        record's TFRecord framing (`framed_crc32c`).
      certified: filled with the CRC-32C of shards without one on record that passed.
    """
    check_verify(verify)
    found = []
    for index, (shard, path) in enumerate(zip(manifest.shards, manifest.shard_paths, strict=True)):
        stat = _stat(path)
        if stat is None:
            found.append((index, "missing"))
        elif stat[0] != shard["bytes"]:
            found.append((index, f"{stat[0]} bytes instead of {shard['bytes']}"))
        elif verify == "size":
            continue
        elif "crc32c" in shard:
            if (stat[1] or file_crc32c(path)) != shard["crc32c"]:
                found.append((index, "checksum differs"))
        elif (crc := framed_crc32c(path)) is None:
            found.append((index, "a record's checksum differs"))
        elif certified is not None:
            certified[index] = crc
    return found


def write(
    directory: paths.Path,
    names: list[str],
    documents: Iterable[list[str]],
    tokenizer: tokenizers.Tokenizer,
    *,
    workers: int,
    chunk_chars: int,
    sentence_split: bool,
    segmenter: str = "",
    targets: Collection[int] | None = None,
    check: Callable[[np.ndarray, list[str], list[int]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Tokenizes ``documents`` into the shards ``names`` (all, or only ``targets``).

    Every shard goes through the atomic writer: it replaces the file of that name only once all
    are complete (and ``check`` has passed), and is removed if anything fails.

    Args:
      sentence_split, segmenter: see `prepare_workers.ChunkTokenizer`.
      targets: indices of the shards to write; the documents of other shards are skipped.
      check: called with the counts, checksums and sizes in bytes before anything is renamed;
        it raises to keep every old file as it is.
      progress: called with the documents written so far, after each chunk.

    Returns:
      [num_shards, 3] documents, sentences and tokens per shard; the CRC-32C of each shard
      (`crc32c_hex`; "" for a shard not written); and the counts of documents without tokens
      and of empty sentences (of written shards).
    """
    num_shards = len(names)
    wanted = range(num_shards) if targets is None else sorted(set(targets))
    if targets is not None:
        keep = np.zeros(num_shards, bool)
        keep[list(wanted)] = True
        documents = _only(documents, keep)
    per_shard = np.zeros((num_shards, 3), np.int64)  # documents, sentences, tokens
    crcs, sizes = [0] * num_shards, [0] * num_shards
    counts = {"documents_without_tokens": 0, "empty_sentences": 0}
    chunks = prepare_workers.chunks(documents, chunk_chars)
    with contextlib.ExitStack() as stack:
        files = {i: stack.enter_context(atomic.open_atomically(directory / names[i]))
                 for i in wanted}  # fmt: skip
        results = prepare_workers.encode_all(
            chunks, tokenizer, workers, num_shards, sentence_split, segmenter
        )
        for result in results:
            for shard, blob, *shard_counts in result.shards:
                files[shard].write(blob)
                crcs[shard] = google_crc32c.extend(crcs[shard], blob)
                sizes[shard] += len(blob)
                per_shard[shard] += shard_counts
            counts["documents_without_tokens"] += result.documents_without_tokens
            counts["empty_sentences"] += result.empty_sentences
            if progress is not None:
                progress(int(per_shard[:, 0].sum()))
        hexes = [crc32c_hex(crcs[i]) if i in files else "" for i in range(num_shards)]
        if check is not None:
            check(per_shard, hexes, sizes)
    return per_shard, hexes, counts


def _only(documents: Iterable[list[str]], keep: np.ndarray) -> Iterator[list[str]]:
    """The documents of the shards marked in ``keep``; the others as empty documents."""
    num_shards = len(keep)
    for index, document in enumerate(documents):
        yield document if keep[index % num_shards] else []


def rewrite(
    manifest: Manifest,
    broken: list[tuple[int, str]],
    documents: Iterable[list[str]],
    tokenizer: tokenizers.Tokenizer,
    *,
    workers: int,
    chunk_chars: int,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Rewrites the ``broken`` shards (from `damaged`) of a manifest's folder, alone.

    Args:
      documents: the manifest's inputs read again, as `prepare` reads them for writing.
      progress: as for `write`.

    Returns:
      The manifest's shard records, with a checksum added to rewritten shards whose record had
      none (an older manifest).

    Raises:
      Mismatch: a rewritten shard differs from its record (then no file was replaced).
    """
    names = [shard["name"] for shard in manifest.shards]
    targets = [index for index, _ in broken]

    def check(per_shard: np.ndarray, crcs: list[str], sizes: list[int]) -> None:
        for index in targets:
            record = manifest.shards[index]
            got = dict(
                zip(("documents", "sentences", "tokens"), per_shard[index].tolist(), strict=True)
            )
            got["bytes"] = sizes[index]
            if any(record[k] != v for k, v in got.items()):
                raise Mismatch(f"{names[index]}: {got}, recorded {record}")
            if record.get("crc32c", crcs[index]) != crcs[index]:
                raise Mismatch(f"{names[index]}: checksum {crcs[index]}, recorded {record}")

    _, crcs, _ = write(
        manifest.directory,
        names,
        documents,
        tokenizer,
        workers=workers,
        chunk_chars=chunk_chars,
        sentence_split=manifest.config["sentence_split"],
        segmenter=manifest.config.get("word_segmenter", ""),
        targets=targets,
        check=check,
        progress=progress,
    )
    shards = [dict(shard) for shard in manifest.shards]
    for index in targets:
        shards[index]["crc32c"] = crcs[index]
    return shards


def verify_and_repair(
    manifest: Manifest,
    verify: str,
    tokenizer: tokenizers.Tokenizer | None,
    documents: Callable[[corpora.CorpusStats], Iterable[list[str]]],
    *,
    workers: int,
    chunk_chars: int,
    started: float,
) -> Manifest | None:
    """Checks the shards of a manifest whose inputs, config and tokenizer are those of the run,
    and rewrites the damaged ones alone (one log line says which, and why).

    Args:
      tokenizer: the run's tokenizer; None loads the manifest's (a trained one).
      documents: reads the inputs again, as `prepare` does for writing, counting into the
        given stats (for the progress lines of a long repair).
      started: `time.perf_counter()` when the run began (for the log line).

    Returns:
      The manifest (written again only if checksums were added to an older one's records), or
      None if a rewritten shard came out different from its record (nothing was replaced).
    """
    certified: dict[int, str] = {}
    broken = damaged(manifest, verify, certified)
    if certified:  # an older manifest's shards, checked record by record
        records = [dict(s) for s in manifest.shards]
        for index, crc in certified.items():
            records[index]["crc32c"] = crc
        manifest = dataclasses.replace(manifest, shards=records)
        write_manifest(manifest)
        _LOG.info("%s: checksums added for %d shards", manifest.directory, len(certified))
    if not broken:
        seconds = time.perf_counter() - started
        _LOG.info(
            "%s is already prepared (%d shards verified by %s in %.2f s); nothing to do",
            *(manifest.directory, len(manifest.shards), verify, seconds),
        )
        return manifest
    for path in manifest.directory.glob(".shard-*.tmp"):  # left by an interrupted run
        path.unlink(missing_ok=True)
    tokenizer = tokenizer or tokenizers.load_tokenizer(manifest.tokenizer_path)
    stats = corpora.CorpusStats()
    options = {"workers": workers, "chunk_chars": chunk_chars}
    options["progress"] = Progress(manifest.inputs, stats).update
    try:
        records = rewrite(manifest, broken, documents(stats), tokenizer, **options)
    except Mismatch as e:
        _LOG.warning("%s: rewriting damaged shards alone failed (%s)", manifest.directory, e)
        return None
    sync_directory(manifest.directory)
    if records != manifest.shards:  # checksums added to an older manifest's records
        manifest = dataclasses.replace(manifest, shards=records)
        write_manifest(manifest)
    _LOG.warning(describe(broken, manifest, time.perf_counter() - started))
    return manifest


def describe(broken: list[tuple[int, str]], manifest: Manifest, seconds: float) -> str:
    """One line: which shards were found damaged and that they were rewritten."""
    found = ", ".join(f"{manifest.shards[i]['name']} ({why})" for i, why in broken)
    return (
        f"{manifest.directory}: {len(broken)} of {len(manifest.shards)} shards damaged: {found}; "
        f"rewrote them alone in {seconds:.1f} s (inputs, settings and tokenizer unchanged)"
    )


class Progress:
    """Logs how far reading has got, at most every 30 seconds."""

    def __init__(self, inputs: list[dict[str, Any]], stats: corpora.CorpusStats):
        self._ends = [0, *itertools.accumulate(i["bytes"] for i in inputs)]  # bytes before file i
        self._stats = stats
        self._start = self._last = time.perf_counter()

    def update(self, documents: int) -> None:
        now = time.perf_counter()
        if now - self._last >= 30:
            self._last, done = now, self._ends[max(0, self._stats.files - 1)] / 1e6
            total, rate = self._ends[-1] / 1e6, done / (now - self._start)
            _LOG.info("read %.0f of %.0f MB, %d documents, %.2f MB/s", done, total, documents, rate)
