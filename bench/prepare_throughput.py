"""Benchmark: corpus preparation throughput and peak memory as the input grows, or by format.

    .venv/bin/python bench/prepare_throughput.py [--sizes=10,20,40,all] [--repeats=2]
    .venv/bin/python bench/prepare_throughput.py --formats=parquet,jsonl [--sizes=all]

Runs the real CLI (``python -m input_pipeline.prepare``, WordPiece, bert-base-uncased vocab) on
the first files of ``../shared/data/wikipedia`` totalling each size, in a fresh process tree per
run, and samples the memory of the whole tree (the CLI and its workers) from /proc every 20 ms:
the peak of the summed PSS (shared pages counted once) and of the summed RSS (shared pages
counted per process, an upper bound). CPU seconds come from the rusage of the tree.

Throughput is MB of raw input text per second of wall time, per core (divided by the CPUs
available), and MB per CPU-second (robust when other processes share the machine; "CPU use",
CPU seconds over wall seconds times cores, well under 100% flags such a run). The peer,
measured in the same run on the smallest size, is the tokenizer alone: the same sentences,
already in memory, through ``encode_batch`` on every core, with no reading, no sentence
splitting, no record writing.

With ``--formats``, the chosen WikiExtractor files are first turned (untimed) into the same
documents in each format, one output file per input file: ``parquet`` (columns id and text,
Snappy, ``--row_group_rows`` rows a row group, as the Hub's ``datasets`` writes them),
``jsonl`` (``{"id", "text"}`` a line), ``jsonl.zst`` (that file, Zstandard). Each format is then
prepared ``--repeats`` times, the formats taking turns so that a busy machine slows them alike;
MB are MB of document text (UTF-8), the same for every format, and the last lines give each
format's figures against the first format's, run for run.
"""

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from input_pipeline import corpora, tokenizers  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
WIKI = DATA / "wikipedia" / "AA"
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB; zeros if it is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Rss"):
            values[name] = int(rest.split()[0])
    return values.get("Pss", 0), values.get("Rss", 0)


class _Sampler(threading.Thread):
    """Samples the summed PSS and RSS of a process tree until stopped; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self._pid, self._interval = pid, interval
        self._stop_event = threading.Event()
        self.peak_pss_kb = self.peak_rss_kb = self.max_processes = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _tree(self._pid)
            pss, rss = (sum(x) for x in zip(*map(_memory_kb, pids), strict=True))
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.max_processes = max(self.max_processes, len(pids))
            self._stop_event.wait(self._interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _files_for(size: str) -> list[pathlib.Path]:
    files = sorted(WIKI.glob("wiki_*"))
    if size == "all":
        return files
    chosen, total = [], 0
    for f in files:
        if total >= float(size) * 1e6:
            break
        chosen.append(f)
        total += f.stat().st_size
    return chosen


def _run(
    files: list[pathlib.Path], workers: int, out: pathlib.Path, format: str = "wikiextractor"
) -> dict:
    command = [sys.executable, "-m", "input_pipeline.prepare", *[f"--input={f}" for f in files]]
    command += [f"--output={out}", f"--format={format}", f"--tokenizer={VOCAB}"]
    command += [f"--workers={workers}", "--force"]
    log = out.with_suffix(".log")
    with open(log, "wb") as output:  # a file, not a pipe: the child never blocks on it
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        sampler = _Sampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)  # rusage of the CLI and its reaped workers
        wall = time.perf_counter() - start
        sampler.stop()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"prepare failed: {log.read_text()[-2000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "pss_mb": sampler.peak_pss_kb / 1024,
        "rss_mb": sampler.peak_rss_kb / 1024,
        "processes": sampler.max_processes,
    }


def _tokenizer_only(files: list[pathlib.Path]) -> float:
    """Seconds for ``encode_batch`` of the files' sentences, on every core, already in memory."""
    sentences = [s for d in corpora.read_corpus(files, "wikiextractor") for s in d]
    tokenizer = tokenizers.load_tokenizer(VOCAB)
    tokenizer.encode_batch(sentences[:1000])  # warm up the thread pool
    start = time.perf_counter()
    tokenizer.encode_batch(sentences)
    return time.perf_counter() - start


def _convert(files: list[pathlib.Path], folder: pathlib.Path, row_group_rows: int) -> float:
    """Writes the files' documents as Parquet, JSON Lines and .jsonl.zst; returns MB of text."""
    import pyarrow as pa  # noqa: PLC0415 (only this mode needs it)
    import pyarrow.parquet as pq  # noqa: PLC0415

    text_bytes = 0
    for f in files:
        texts = [
            "\n".join(d) for d in corpora.read_corpus([f], "wikiextractor", sentence_split=False)
        ]
        ids = [f"{f.name}-{i}" for i in range(len(texts))]
        text_bytes += sum(len(t.encode()) for t in texts)
        table = pa.table({"id": ids, "text": texts})
        pq.write_table(table, folder / f"{f.name}.parquet", row_group_size=row_group_rows)
        lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                        for i, t in zip(ids, texts, strict=True))  # fmt: skip
        (folder / f"{f.name}.jsonl").write_text(lines, encoding="utf-8")
        with pa.CompressedOutputStream(str(folder / f"{f.name}.jsonl.zst"), "zstd") as out:
            out.write(lines.encode())
    return text_bytes / 1e6


def _compare_formats(args: argparse.Namespace, cores: int, workers: int) -> None:
    formats = args.formats.split(",")
    files = _files_for(args.sizes.split(",")[-1])
    header = (
        f"{'format':>9} {'run':>3} {'text MB':>7} {'file MB':>7} {'wall s':>7} {'MB/s':>6} "
        f"{'MB/s/core':>9} {'CPU s':>6} {'CPU use':>7} {'MB/CPU-s':>8} {'peak PSS MB':>11} "
        f"{'peak RSS MB':>11}"
    )
    results: dict[str, list[dict]] = {f: [] for f in formats}
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        megabytes = _convert(files, folder, args.row_group_rows)
        print(f"{len(files)} WikiExtractor files, {megabytes:.1f} MB of document text")
        print(header)
        for repeat in range(args.repeats):
            for name in formats:
                inputs = [folder / f"{f.name}.{name}" for f in files]
                file_mb = sum(p.stat().st_size for p in inputs) / 1e6
                kind = "parquet" if name == "parquet" else "jsonl"
                r = _run(inputs, workers, folder / f"out-{name}", kind)
                results[name].append(r)
                print(
                    f"{name:>9} {repeat + 1:3d} {megabytes:7.1f} {file_mb:7.1f} {r['wall']:7.2f} "
                    f"{megabytes / r['wall']:6.2f} {megabytes / r['wall'] / cores:9.2f} "
                    f"{r['cpu']:6.1f} {r['cpu'] / r['wall'] / cores:7.0%} "
                    f"{megabytes / r['cpu']:8.2f} {r['pss_mb']:11.0f} {r['rss_mb']:11.0f}",
                    flush=True,
                )
    base = formats[0]
    for name in formats[1:]:
        pairs = list(zip(results[name], results[base], strict=True))
        ratios = [
            f"wall {b['wall'] / r['wall']:.2f}x, CPU {b['cpu'] / r['cpu']:.2f}x, "
            f"peak PSS {r['pss_mb'] / b['pss_mb']:.2f}x"
            for r, b in pairs
        ]
        print(f"{name} against {base} (speed: >1 is faster; memory: >1 is more), run by run: "
              + "; ".join(ratios))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,20,40,all", help="MB of input, or 'all'")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size")
    parser.add_argument("--workers", type=int, default=None, help="default: every CPU")
    parser.add_argument("--formats", default="", help="e.g. parquet,jsonl: compare formats")
    parser.add_argument("--row_group_rows", type=int, default=1000, help="Parquet row group")
    args = parser.parse_args()
    if not WIKI.is_dir():
        sys.exit(f"{WIKI} is absent; this benchmark needs ../shared/data")
    cores = len(os.sched_getaffinity(0))
    workers = cores if args.workers is None else args.workers
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    model = names[0] if names else "unknown CPU"
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {cores} CPUs ({model}); workers={workers}; {time.strftime('%Y-%m-%d')}")
    if args.formats:
        _compare_formats(args, cores, workers)
        return
    header = (
        f"{'input MB':>8} {'files':>5} {'run':>3} {'wall s':>7} {'MB/s':>6} {'MB/s/core':>9} "
        f"{'CPU s':>6} {'CPU use':>7} {'MB/CPU-s':>8} {'peak PSS MB':>11} {'peak RSS MB':>11} "
        f"{'procs':>5}"
    )
    print(header)
    peer_files = None
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            files = _files_for(size)
            peer_files = peer_files or files
            megabytes = sum(f.stat().st_size for f in files) / 1e6
            for repeat in range(args.repeats):
                r = _run(files, workers, pathlib.Path(tmp) / f"out-{size}")
                print(
                    f"{megabytes:8.1f} {len(files):5d} {repeat + 1:3d} {r['wall']:7.2f} "
                    f"{megabytes / r['wall']:6.2f} {megabytes / r['wall'] / cores:9.2f} "
                    f"{r['cpu']:6.1f} {r['cpu'] / r['wall'] / cores:7.0%} "
                    f"{megabytes / r['cpu']:8.2f} {r['pss_mb']:11.0f} "
                    f"{r['rss_mb']:11.0f} {r['processes']:5d}",
                    flush=True,
                )
    megabytes = sum(f.stat().st_size for f in peer_files) / 1e6
    seconds = _tokenizer_only(peer_files)
    rate = megabytes / seconds
    print(
        f"peer, tokenizer only ({megabytes:.1f} MB in memory, encode_batch on {cores} threads): "
        f"{seconds:.2f} s, {rate:.2f} MB/s, {rate / cores:.2f} MB/s/core"
    )
    print(
        "reference (DESIGN.md, not rerun here): Google's create_pretraining_data.py, one core: "
        "0.22 MB/s, 1.06 GB peak at 10.2 MB and 1.43 GB at 20.3 MB of input"
    )


if __name__ == "__main__":
    main()
