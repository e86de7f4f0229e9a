"""Benchmark: the pre-training input pipeline's throughput, masking on, on real Wikipedia records.

    .venv/bin/python bench/pipeline_throughput.py [--files=80] [--seconds=20] [--batch_size=256]

Prepares the first ``--files`` files of ``../shared/data/wikipedia`` once (uncased WordPiece,
``input_pipeline.prepare``; reused from ``--records`` on later runs), then, for NSP and packed
mode at sequence 128 (20 predictions) and 512 (80), with and without whole-word masking, times
``make_pretraining_dataset`` in this process: 5 warm-up batches, then as many batches as fit in
``--seconds``. Reported: sequences/s, real (non-padding) tokens/s, the share of real tokens,
CPU use (process CPU seconds over wall seconds times cores: well under 100% flags another load
on the machine, since the pipeline alone keeps both cores busy), and sequences per CPU-second
(robust to such a load).

Peer, measured in the same run: tf.data reading and parsing the same records with
`records.parse_documents` (no instances, no masking), in tokens/s: the ceiling for any
pipeline on these files. Resume: seconds to the first batch with ``start_step=--resume_step``
(NSP, 128) against ``start_step=0``; the skipped instances are counted, not built.
"""

import argparse
import os
import pathlib
import resource
import shlex
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import tensorflow as tf  # noqa: E402

from input_pipeline import batches, prepare, pretraining, records, tokenizers  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WIKI = DATA / "wikipedia" / "AA"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"
CONFIGS = [  # mode, sequence length, predictions per sequence, whole-word masking
    ("nsp", 128, 20, False),
    ("packed", 128, 20, False),
    ("nsp", 512, 80, False),
    ("packed", 512, 80, False),
    ("nsp", 128, 20, True),
    ("packed", 512, 80, True),
]


def _records(files: int, directory: pathlib.Path) -> list[str]:
    sources = sorted(WIKI.glob("wiki_*"))[:files]
    manifest = prepare.prepare(sources, directory, "wikiextractor", VOCAB, num_shards=16)
    return [str(path) for path in manifest.shard_paths]


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _time_pipeline(dataset: tf.data.Dataset, seconds: float) -> dict[str, float]:
    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    batches = real = 0
    cpu, start = _cpu_seconds(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        batches += 1
        real += int(batch["input_mask"].numpy().sum())
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    shape = batch["input_ids"].shape
    del iterator
    return {
        "sequences": batches * shape[0] / wall,
        "tokens": real / wall,
        "fill": real / (batches * shape[0] * shape[1]),
        "cpu": cpu / wall / len(os.sched_getaffinity(0)),
        "per_cpu_second": batches * shape[0] / cpu,
    }


def _peer_tokens_per_second(files: list[str], seconds: float) -> float:
    """tf.data read + parse of the records only, in tokens/s (the ceiling)."""
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=8
    )
    dataset = dataset.repeat().batch(64).map(records.parse_documents, tf.data.AUTOTUNE)
    iterator = iter(dataset.prefetch(2))
    next(iterator)
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tokens += int(next(iterator)["token_ids"].flat_values.shape[0])
    return tokens / (time.perf_counter() - start)


def _first_batch_seconds(files, ids, batch_size, start_step) -> float:
    start = time.perf_counter()
    dataset = pretraining.make_pretraining_dataset(
        files, batches.Settings(128, 20), ids, batch_size=batch_size, start_step=start_step
    )
    next(iter(dataset))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=80, help="Wikipedia files (of 80) to use")
    parser.add_argument("--records", default="/tmp/jax-bert-bench/wiki-uncased-records")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--resume_step", type=int, default=500)
    args = parser.parse_args()
    if not WIKI.is_dir():
        sys.exit(f"{WIKI} is absent; this benchmark needs ../shared/data")
    files = _records(args.files, pathlib.Path(args.records))
    tokenizer = tokenizers.load_tokenizer(VOCAB)
    ids = tokenizer.special_ids
    cores = len(os.sched_getaffinity(0))
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {cores} CPUs ({names[0] if names else 'unknown CPU'}); tf {tf.__version__}")
    print(f"date: {time.strftime('%Y-%m-%d')}; records: {len(files)} shards, {megabytes:.1f} MB")
    print(f"batch {args.batch_size}, masking on (15%, 80/10/10), {args.seconds:g} s per row")
    header = f"{'mode':>6} {'seq':>4} {'wwm':>3} {'seq/s':>8} {'real tok/s':>11}"
    print(header + f" {'fill':>5} {'CPU use':>7} {'seq/CPU-s':>9}")
    for mode, length, predictions, wwm in CONFIGS:
        settings = batches.Settings(length, predictions, mode, whole_word_masking=wwm)
        dataset = pretraining.make_pretraining_dataset(
            files, settings, ids, batch_size=args.batch_size
        )
        r = _time_pipeline(dataset, args.seconds)
        print(
            f"{mode:>6} {length:4d} {'yes' if wwm else 'no':>3} {r['sequences']:8.0f} "
            f"{r['tokens']:11.0f} {r['fill']:5.1%} {r['cpu']:7.0%} {r['per_cpu_second']:9.0f}",
            flush=True,
        )
    peer = _peer_tokens_per_second(files, min(args.seconds, 10.0))
    print(f"peer, tf.data read + parse only: {peer:.0f} tokens/s")
    fresh = _first_batch_seconds(files, ids, args.batch_size, 0)
    resumed = _first_batch_seconds(files, ids, args.batch_size, args.resume_step)
    skipped = args.resume_step * args.batch_size
    print(
        f"resume (nsp, 128): first batch {fresh:.2f} s at step 0, {resumed:.2f} s at step "
        f"{args.resume_step} ({skipped} instances counted: "
        f"{skipped / max(resumed - fresh, 1e-9):.0f} instances/s)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
