"""Benchmark: the cost of verifying prepared data, of computing shard checksums, and of a repair.

    .venv/bin/python bench/prepare_verify.py [--files=80] [--repeats=5] [--workers=N]

Prepares the first ``--files`` WikiExtractor files of ``../shared/data/wikipedia`` (WordPiece,
bert-base-uncased vocab, the default shard count) once, in this process, timing every CRC-32C
update made while the shards are written (the overhead of the checksums). Then times what a
start does before training, ``prepare.is_complete``: the inputs' identity, the tokenizer's
fingerprint, the manifest, and the shards checked by size only ("size", what earlier versions
did) or by size and checksum ("checksum", the default), with the shards in the page cache
(warm, as right after preparing) and evicted from it first (cold, ``posix_fadvise
DONTNEED``; a read from the disk). The shard check alone (`shards.damaged`) is shown too, and
the one-time check of a manifest of an older version (every record against its TFRecord CRCs).
Last, one shard is truncated and the repair (rewriting it alone) is timed against the full
preparation, and the rewritten shard compared with the original.

Prints a table, the command, and the machine's load (``uptime``) before and after.
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import google_crc32c  # noqa: E402

from input_pipeline import prepare, shards  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WIKI = DATA / "wikipedia" / "AA"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"


class _TimedCrc:
    """Stands in for the `google_crc32c` module inside `shards`, adding up its time."""

    def __init__(self):
        self.seconds = 0.0
        self.bytes = 0

    def extend(self, crc: int, data: bytes) -> int:
        start = time.perf_counter()
        value = google_crc32c.extend(crc, data)
        self.seconds += time.perf_counter() - start
        self.bytes += len(data)
        return value


def _evict(paths: list[pathlib.Path]) -> None:
    """Drops the files' pages from the page cache (they are clean: synced when written)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _times(function, repeats: int, before=None) -> list[float]:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def _row(label: str, times: list[float]) -> str:
    median, best = statistics.median(times), min(times)
    return f"| {label} | {median * 1e3:,.1f} ms | {best * 1e3:,.1f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=80, help="first N Wikipedia files")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure")
    parser.add_argument("--workers", type=int, default=None, help="default: every CPU")
    args = parser.parse_args()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    files = [str(p) for p in sorted(WIKI.glob("wiki_*"))[: args.files]]
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "out"
        timed = _TimedCrc()
        real, shards.google_crc32c = shards.google_crc32c, timed
        start = time.perf_counter()
        try:
            manifest = prepare.prepare(files, out, "wikiextractor", VOCAB, workers=args.workers)
        finally:
            shards.google_crc32c = real
        full = time.perf_counter() - start
        shard_paths = manifest.shard_paths
        shard_mb = sum(s["bytes"] for s in manifest.shards) / 1e6

        def start_check(verify: str):
            return lambda: prepare.is_complete(files, out, "wikiextractor", VOCAB, verify=verify)

        def shard_check(verify: str):
            return lambda: shards.damaged(manifest, verify)

        rows = []
        checks = (("start check (is_complete)", start_check), ("shards only", shard_check))
        for what, make in checks:
            for verify in ("size", "checksum"):
                assert make(verify)() in (True, [])
                rows.append(_row(f"{what}, {verify}, warm", _times(make(verify), args.repeats)))
                cold = _times(make(verify), args.repeats, lambda: _evict(shard_paths))
                rows.append(_row(f"{what}, {verify}, cold", cold))

        def framed():  # what the first start of an older manifest (no checksums) does
            assert all(shards.framed_crc32c(path) for path in shard_paths)

        rows.append(_row("shards only, record CRCs (older manifest), warm", _times(framed, 3)))
        victim = shard_paths[0]
        original = victim.read_bytes()
        victim.write_bytes(original[: len(original) // 2])
        start = time.perf_counter()
        prepare.prepare(files, out, "wikiextractor", VOCAB, workers=args.workers)
        repair = time.perf_counter() - start
        assert victim.read_bytes() == original, "the rewritten shard differs"

    print(f"\n{len(files)} files, {megabytes:.1f} MB of input -> {len(shard_paths)} shards of")
    print(f"{shard_mb:.1f} MB in all; {args.repeats} runs per figure\n")
    print("| what | median | best |\n|---|---|---|")
    print("\n".join(rows))
    share = 100 * timed.seconds / full
    print(f"\npreparation: {full:.2f} s; CRC-32C while writing: {timed.seconds * 1e3:.1f} ms")
    print(f"over {timed.bytes / 1e6:.1f} MB ({share:.3f}% of the preparation)")
    print(f"repair of 1 of {len(shard_paths)} shards (truncated): {repair:.2f} s, byte-identical")
    print(f"\ncommand: python bench/prepare_verify.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load before: {uptime_before}")
    print(f"load after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout}")


if __name__ == "__main__":
    main()
