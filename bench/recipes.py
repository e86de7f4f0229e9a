"""The budget recipes' reference runs: BERT 2018 (configs/bert_base.py), the modern MLM recipe
(configs/modernbert.py) and ELECTRA (configs/electra.py), each at BERT-mini size on the 80
Wikipedia files of ../shared/data with an uncased SentencePiece vocabulary trained on them,
for the same training time (train.max_wall_clock), probed downstream as they go (SST-2 accuracy,
STS benchmark Spearman: bert/jobs/downstream.py); and their curves against training time.

  python bench/recipes.py run --recipe=bert --hours=2   # resumable: run it again to continue
  python bench/recipes.py curves                        # bench/curves/recipes_*.csv and .png
  python bench/recipes.py goal --recipe=bert --seeds=3  # bench/curves/recipes_bert_goal.json
  python bench/recipes.py diagnose --recipe=bert        # bench/curves/recipes_bert_diagnose.json

`goal` fine-tunes the finished run's encoder and a randomly initialised one of the same
architecture (seed 12345) with the same settings (GOAL): SST-2 (the GLUE job, 16,000 training
sentences, dev accuracy) and a CoSENT bi-encoder on STS benchmark train (the embeddings job,
dev Spearman), one run per seed for each.

`diagnose` asks why a pre-trained encoder does or does not beat the random one: what its frozen
features hold (a logistic-regression probe on SST-2's mean-pooled token states, and how alike
any two sentences' features are, mean-pooled and the first token's: a collapsed encoder gives
every sentence nearly the same vector), and whether what the classifier reads holds it back:
for BERT's models the pooler, trained only for next sentence prediction (the GOAL fine-tuning
with the pooler's weights replaced by the random encoder's); for ModernBERT's the first
token's state, which masked-LM pre-training never asks for anything (the GOAL fine-tuning of
both encoders with the classifier reading the mean of the tokens' states instead,
model.classifier_pooling=mean).

A run stopped (Ctrl-C, SIGTERM) saves and resumes where it stopped, on the same budget: the time
spent is in every checkpoint. Run one recipe at a time on a quiet machine: the budget is
wall-clock, and a second job on the cores shrinks what it buys.
"""

import argparse
import dataclasses
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
        path = CURVES / f"recipes_{name}.csv"
        if workdir.is_dir():
            rows[name] = recipe_rows(workdir)
            from_scratch._write_csv(path, rows[name])
            print(f"wrote {path} ({len(rows[name])} evaluations)")
        elif path.is_file():  # a run recorded before, its workdir gone: its curve as recorded
            rows[name] = from_scratch._read_csv(path)
            print(f"{name}: no run in {workdir}, its curve read from {path}")
        else:
            print(f"{name}: no run in {workdir} and no {path}, left out")
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


def _frozen_features(encoder, texts, pooling: str = "mean") -> dict:
    """Token states of `texts` pooled by `pooling` ("mean", or "cls": the first token's),
    unnormalised, and the mean cosine similarity of two different texts' vectors."""
    import numpy as np

    from bert import embed

    vectors = embed.embed(encoder, texts, max_seq_length=GOAL["max_seq_length"], pooling=pooling,
                          normalize=False)  # fmt: skip
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = unit.mean(0)
    n = len(unit)
    cosine = (n * n * float(mean @ mean) - n) / (n * (n - 1))  # off-diagonal mean
    return {"vectors": vectors, "mean_cosine": cosine}


def _probe(train, dev) -> float:
    """Dev accuracy of a logistic regression on frozen features (standardised)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x, y), (dev_x, dev_y) = train, dev
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    return float(model.fit(x, y).score(dev_x, dev_y))


def _classifier_variants(trained, rand) -> dict:
    """The encoders `diagnose` fine-tunes as in `goal`, each changing what the classifier reads.
    BERT's models: the pre-trained encoder with the random one's pooler. ModernBERT's (no
    pooler; the classifier reads the first token's state): both encoders with the classifier
    reading the mean of the tokens' states."""
    if not trained.config.prediction_head:
        params = dict(trained.params["bert"], pooler=rand.params["bert"]["pooler"])
        reset = dataclasses.replace(trained, params={"bert": params})
        return {"pretrained with random pooler": reset}

    def mean_pooled(encoder):
        config = dataclasses.replace(encoder.config, classifier_pooling="mean")
        return dataclasses.replace(encoder, config=config)

    return {"pretrained, mean pooling": mean_pooled(trained),
            "random, mean pooling": mean_pooled(rand)}  # fmt: skip


def diagnose(args) -> None:
    import tempfile

    import numpy as np

    from bert import pretrained
    from bert.jobs import downstream, glue
    from bert.tasks import glue as glue_data
    from configs import bert_base

    workdir = pathlib.Path(args.workdir or f"{args.runs}/{args.recipe}")
    trained = _encoder_only(pretrained.load(str(workdir)))
    rand = _random_like(trained)
    sst2 = SHARED["downstream.sst2_dir"]
    split = {name: glue_data.read_split("sst2", sst2, name) for name in ("train", "dev")}
    split["train"] = split["train"][: GOAL["train_limit"]]
    out: dict = {"workdir": str(workdir), "step": trained.step}
    for name, encoder in (("pretrained", trained), ("random", rand)):
        data = {}
        for part, examples in split.items():
            features = _frozen_features(encoder, [e.text_a for e in examples])
            data[part] = (features["vectors"], np.array([e.label for e in examples]))
            if part == "dev":
                out[f"{name} dev mean cosine"] = features["mean_cosine"]
                first = _frozen_features(encoder, [e.text_a for e in examples], "cls")
                out[f"{name} dev first-token mean cosine"] = first["mean_cosine"]
        out[f"{name} frozen probe accuracy"] = _probe(data["train"], data["dev"])
        print(name, {k: v for k, v in out.items() if k.startswith(name)}, flush=True)
    section = bert_base.get_config("size=tiny").downstream
    section.sst2_dir = sst2
    section.update(GOAL)
    for name, encoder in _classifier_variants(trained, rand).items():
        scores = []
        for seed in range(args.seeds):
            section.seed = seed
            with tempfile.TemporaryDirectory() as tmp:
                config = downstream._job_config("sst2", section)
                scores.append(glue.run(config, tmp, encoder=encoder)["dev"]["accuracy"])
            print(f"seed {seed} {name}: sst2 accuracy {scores[-1]:.4f}", flush=True)
        out[f"{name} sst2 accuracy"] = {"mean": sum(scores) / len(scores), "runs": scores}
    path = CURVES / f"recipes_{args.recipe}_diagnose.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("run", "curves", "goal", "diagnose"))
    parser.add_argument("--recipe", choices=tuple(RECIPES), default="bert", help="run: which")
    parser.add_argument("--hours", type=float, default=2.0, help="run: training-time budget")
    parser.add_argument("--workdir", default="", help="run, goal, diagnose: default RUNS/RECIPE")
    parser.add_argument("--runs", default="runs/recipes", help="the runs' parent folder")
    parser.add_argument("--seeds", type=int, default=3, help="goal, diagnose: fine-tuning seeds")
    args = parser.parse_args()
    {"run": run, "curves": curves, "goal": goal, "diagnose": diagnose}[args.what](args)


if __name__ == "__main__":
    main()
