"""Benchmark: corpus preparation throughput and peak memory as the input grows.

    .venv/bin/python bench/prepare_throughput.py [--sizes=10,20,40,all] [--repeats=2]

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
"""

import argparse
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


def _run(files: list[pathlib.Path], workers: int, out: pathlib.Path) -> dict:
    command = [sys.executable, "-m", "input_pipeline.prepare", *[f"--input={f}" for f in files]]
    command += [f"--output={out}", "--format=wikiextractor", f"--tokenizer={VOCAB}"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,20,40,all", help="MB of input, or 'all'")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size")
    parser.add_argument("--workers", type=int, default=None, help="default: every CPU")
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
