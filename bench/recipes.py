"""The budget recipes' reference runs: BERT 2018 (configs/bert_base.py), the modern MLM recipe
(configs/modernbert.py) and ELECTRA (configs/electra.py), each at BERT-mini size on the 80
Wikipedia files of ../shared/data with an uncased SentencePiece vocabulary trained on them,
for the same training time (train.max_wall_clock), probed downstream as they go (SST-2 accuracy,
STS benchmark Spearman: bert/jobs/downstream.py); and their curves against training time.

  python bench/recipes.py run --recipe=bert --hours=2   # resumable: run it again to continue
  python bench/recipes.py curves                        # bench/curves/recipes_*.csv and .png
  python bench/recipes.py goal --recipe=bert --seeds=3  # bench/curves/recipes_bert_goal.json

`goal` fine-tunes the finished run's encoder and a randomly initialised one of the same
architecture (seed 12345) with the same settings (GOAL): SST-2 (the GLUE job, 16,000 training
sentences, dev accuracy) and a CoSENT bi-encoder on STS benchmark train (the embeddings job,
dev Spearman), one run per seed for each.

A run stopped (Ctrl-C, SIGTERM) saves and resumes where it stopped, on the same budget: the time
spent is in every checkpoint. Run one recipe at a time on a quiet machine: the budget is
wall-clock, and a second job on the cores shrinks what it buys.
"""

import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import from_scratch  # noqa: E402 (bench/, beside this script: the event reader, the CSV writer)

CURVES = ROOT / "bench" / "curves"
DATA = ROOT.parent / "shared" / "data"
RECIPES = {  # name -> config with its arg
    "bert": "configs/bert_base.py:size=mini,recipe=short",
    "modern": "configs/modernbert.py:size=mini,recipe=short",
    "electra": "configs/electra.py:size=mini,recipe=short",
}
# What every recipe shares: the corpus, the tokenizer, the budget's bookkeeping and the probes.
# recipe=short sets each recipe's batch, learning rate and warm-up proportion; train.steps only
# bounds a run that the budget ends.
SHARED = {
    "data.input": f"{DATA}/wikipedia/AA/wiki_*",
    "data.format": "wikiextractor",
    "data.sentencepiece_lowercase": True,  # SST-2 and STS benchmark text is lower-cased
    "train.steps": 1_000_000,
    "train.log_every": 50,
    "train.eval_every": 250,
    "train.checkpoint_every": 250,
    "downstream.every": 1000,
    "downstream.sst2_dir": f"{DATA}/glue/SST-2",
    "downstream.stsb_train": f"{DATA}/stsbenchmark/sts-train.csv",
    "downstream.stsb_dev": f"{DATA}/stsbenchmark/sts-dev.csv",
}
# (tag in TensorBoard, column, figure title)
METRICS = (
    ("eval/mlm_loss", "mlm_loss", "held-out MLM loss"),
    ("eval/downstream/sst2/accuracy", "sst2_accuracy", "SST-2 dev accuracy (probe)"),
    ("eval/downstream/stsb/spearman", "stsb_spearman", "STS-B dev Spearman (probe)"),
)
SECONDS_TAG = "train/training_seconds"
# The goal's fine-tuning (config.downstream's fields): the same for both initialisations.
GOAL = {"train_limit": 16000, "eval_limit": 0, "steps": 500, "batch_size": 32,
        "learning_rate": 1e-4, "max_seq_length": 64}  # fmt: skip
RANDOM_SEED = 12345  # the random initialisation's


def run(args) -> None:
    workdir = pathlib.Path(args.workdir or f"{args.runs}/{args.recipe}")
    settings = {**SHARED, "train.max_wall_clock": args.hours * 3600.0}
    flags = [f"--config.{k}={v}" for k, v in settings.items()]
    command = [sys.executable, str(ROOT / "main.py"), f"--config={RECIPES[args.recipe]}",
               f"--workdir={workdir}", *flags]  # fmt: skip
    print(" ".join(command), flush=True)
    sys.exit(subprocess.run(command, cwd=ROOT).returncode)


def _seconds_at(seconds: dict[int, float], step: int) -> float:
    """Training time at `step`: logged at that step, else at the nearest logged step before it
    (step 0: nothing trained yet)."""
    before = [s for s in seconds if s <= step]
    return seconds[max(before)] if before else 0.0


def recipe_rows(workdir: pathlib.Path) -> list[dict]:
    """One row per evaluated step: its training time and every metric measured there."""
    by_step = from_scratch._scalars(workdir, "")  # step -> {tag: value}
    seconds = {step: v[SECONDS_TAG] for step, v in by_step.items() if SECONDS_TAG in v}
    steps = sorted(step for step, v in by_step.items() if any(t in v for t, _, _ in METRICS))
    return [
        {
            "step": step,
            "training_seconds": round(_seconds_at(seconds, step), 1),
            **{column: by_step[step].get(tag, "") for tag, column, _ in METRICS},
        }
        for step in steps
    ]


def curves(args) -> None:
    rows = {}
    for name in RECIPES:
        workdir = pathlib.Path(args.runs) / name
        if not workdir.is_dir():
            print(f"{name}: no run in {workdir}, left out")
            continue
        rows[name] = recipe_rows(workdir)
        path = CURVES / f"recipes_{name}.csv"
        from_scratch._write_csv(path, rows[name])
        print(f"wrote {path} ({len(rows[name])} evaluations)")
    if rows:
        _plot(rows)


def _plot(rows: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for _, column, title in METRICS:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, recipe in rows.items():
            points = [(r["training_seconds"] / 60, r[column]) for r in recipe if r[column] != ""]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", label=name)
        ax.set_title(f"BERT-mini recipes on 80 Wikipedia files: {title}")
        ax.set_xlabel("training time (minutes, 2-core CPU)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = CURVES / f"recipes_{column}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        print(f"wrote {path}")


def _encoder_only(trained):
    """`trained` with its encoder alone (its pre-training heads dropped)."""
    import dataclasses

    return dataclasses.replace(trained, params={"bert": trained.params["bert"]})


def _random_like(trained):
    """A randomly initialised encoder of `trained`'s architecture and tokenizer."""
    from bert import pretrained

    return pretrained.random_encoder(trained.config, trained.tokenizer, RANDOM_SEED)


def goal(args) -> None:
    import tempfile

    from bert import pretrained
    from bert.jobs import downstream, embeddings, glue
    from configs import bert_base

    workdir = pathlib.Path(args.workdir or f"{args.runs}/{args.recipe}")
    trained = pretrained.load(str(workdir))
    trained = _encoder_only(trained)
    section = bert_base.get_config("size=tiny").downstream
    section.sst2_dir, section.stsb_train, section.stsb_dev = (
        SHARED["downstream.sst2_dir"], SHARED["downstream.stsb_train"],
        SHARED["downstream.stsb_dev"],
    )  # fmt: skip
    section.update(GOAL)
    encoders = {"pretrained": trained, "random": _random_like(trained)}
    runs: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        section.seed = seed
        for name, encoder in encoders.items():
            for task, job in (("sst2", glue.run), ("stsb", embeddings.run)):
                split, metric = downstream.TASKS[task]
                with tempfile.TemporaryDirectory() as out:
                    config = downstream._job_config(task, section)
                    score = job(config, out, encoder=encoder)[split][metric]
                runs.setdefault(f"{name} {task} {metric}", []).append(score)
                print(f"seed {seed} {name} {task}: {metric} {score:.4f}", flush=True)
    summary = {
        "workdir": str(workdir), "step": trained.step, "settings": GOAL,
        **{k: {"mean": sum(v) / len(v), "runs": v} for k, v in runs.items()},
    }  # fmt: skip
    path = CURVES / f"recipes_{args.recipe}_goal.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("run", "curves", "goal"))
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="bert", help="run: which")
    parser.add_argument("--hours", type=float, default=2.0, help="run: training-time budget")
    parser.add_argument("--workdir", default="", help="run, goal: default RUNS/RECIPE")
    parser.add_argument("--runs", default="runs/recipes", help="the runs' parent folder")
    parser.add_argument("--seeds", type=int, default=3, help="goal: fine-tuning seeds")
    args = parser.parse_args()
    {"run": run, "curves": curves, "goal": goal}[args.what](args)


if __name__ == "__main__":
    main()
