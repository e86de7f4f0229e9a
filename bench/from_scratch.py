"""The from-scratch reference run: BERT-mini pre-trained with LAMB on the 80 Wikipedia files of
../shared/data (SentencePiece trained by the job), its held-out curves, HF PyTorch trained the
same way on the same batches, and SST-2 fine-tuning from it against random initialisation.

  python bench/from_scratch.py pretrain --workdir=runs/mini_wiki   # main.py with RECIPE (resumes)
  python bench/from_scratch.py hf --workdir=runs/mini_wiki --minutes=30
  python bench/from_scratch.py curves --workdir=runs/mini_wiki     # CSV + PNG in bench/curves/
  python bench/from_scratch.py sst2 --workdir=runs/mini_wiki --seeds=3

`hf` starts HF `BertForPreTraining` from the run's own initial weights (seed 0, exported with
bert/convert), feeds it the run's batches (our tf.data pipeline, masks included), trains it with
timm's Lamb (NVIDIA's rule), transformers' warm-up + linear decay, global-norm clipping and
dropout 0.1, and evaluates it on the run's held-out batches at the run's evaluation steps.
"""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
CURVES = ROOT / "bench" / "curves"
WIKI = ROOT.parent / "shared" / "data" / "wikipedia" / "AA"
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"
RECIPE = {
    "data.input": f"{WIKI}/wiki_*",
    "data.format": "wikiextractor",
    "data.sentencepiece_vocab_size": 8192,
    "data.num_shards": 16,
    "train.batch_size": 64,
    "train.steps": 2000,
    "train.warmup_steps": 200,
    "train.learning_rate": 6e-3,
    "train.log_every": 50,
    "train.eval_every": 250,
    "train.eval_batches": 20,
    "train.checkpoint_every": 500,
}
SIZE = "mini"
EVAL_TAGS = ("mlm_loss", "mlm_accuracy", "mlm_perplexity", "nsp_loss", "nsp_accuracy")


def recipe_config():
    from configs import bert_base

    config = bert_base.get_config(f"size={SIZE}")
    for key, value in RECIPE.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def pretrain(args) -> None:
    flags = [f"--config.{k}={v}" for k, v in RECIPE.items()]
    command = [sys.executable, str(ROOT / "main.py"), f"--config=configs/bert_base.py:size={SIZE}",
               f"--workdir={args.workdir}", *flags]  # fmt: skip
    print(" ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def _hf_eval(model, batches) -> dict[str, float]:
    import torch
    import trajectory

    sums = dict.fromkeys(("mlm_loss", "mlm_correct", "mlm_count", "nsp_loss", "nsp_correct"), 0.0)
    count = 0
    model.eval()
    with torch.no_grad():
        for batch in batches:
            labels = torch.tensor(trajectory.mlm_labels(batch))
            out = model(**trajectory.encoder_inputs(batch))
            chosen = labels >= 0
            logits = out.prediction_logits[chosen]
            targets = labels[chosen]
            sums["mlm_loss"] += float(
                torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            )
            sums["mlm_correct"] += float((logits.argmax(-1) == targets).sum())
            sums["mlm_count"] += float(chosen.sum())
            nsp = torch.tensor(batch["next_sentence_labels"], dtype=torch.long)
            nsp_logits = out.seq_relationship_logits
            sums["nsp_loss"] += float(
                torch.nn.functional.cross_entropy(nsp_logits, nsp, reduction="sum")
            )
            sums["nsp_correct"] += float((nsp_logits.argmax(-1) == nsp).sum())
            count += len(nsp)
    model.train()
    return {
        "mlm_loss": sums["mlm_loss"] / sums["mlm_count"],
        "mlm_accuracy": sums["mlm_correct"] / sums["mlm_count"],
        "nsp_loss": sums["nsp_loss"] / count,
        "nsp_accuracy": sums["nsp_correct"] / count,
    }


def hf(args) -> None:
    import torch
    import trajectory
    import transformers

    from bert import objectives
    from bert.jobs import pretrain as job
    from input_pipeline import data_setup, pretraining

    torch.set_num_threads(os.cpu_count() or 1)
    config = recipe_config()
    workdir = pathlib.Path(args.workdir)
    data = data_setup.prepare_pretraining_data(job.corpus(config), workdir)  # finds it prepared
    bert_config = job.model_config(config.model, data.tokenizer.vocab_size)
    objective = objectives.create(config.objective, bert_config)
    ids = data.tokenizer.special_ids
    t = config.train
    params = _initial_params(bert_config, config)
    recipe = trajectory.Recipe("lamb", t.learning_rate, job.warmup_steps(t), t.steps,
                               t.weight_decay, t.b1, t.b2, t.eps, t.clip_norm)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        directory = trajectory.export(params, bert_config, pathlib.Path(tmp) / "hf")
        model = transformers.BertForPreTraining.from_pretrained(str(directory))
    model.train()
    opt, schedule = trajectory.torch_optimizer(model, recipe)
    settings = job.batch_settings(config, objective)
    train = pretraining.make_pretraining_dataset(
        data.train_files, settings, ids, batch_size=t.batch_size, seed=config.seed
    )
    held_out = job.eval_batches_of(data.eval_files, config, settings, ids, objective,
                                   t.batch_size)  # fmt: skip
    rows, started = [], time.perf_counter()
    for step, batch in enumerate(train.as_numpy_iterator(), 1):
        nsp = torch.tensor(batch["next_sentence_labels"], dtype=torch.long)
        labels = torch.tensor(trajectory.mlm_labels(batch))
        loss = model(
            **trajectory.encoder_inputs(batch), labels=labels, next_sentence_label=nsp
        ).loss
        loss.backward()
        opt.step()
        schedule.step()
        opt.zero_grad()
        if step % t.eval_every == 0:
            row = {
                "step": step,
                **_hf_eval(model, held_out),
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write_csv(CURVES / f"{args.name}_hf.csv", rows)
            if row["seconds"] > args.minutes * 60 or step >= t.steps:
                break


def _initial_params(bert_config, config):
    """The run's own initial weights: the same state creation, the same seed."""
    import jax

    from bert.heads import BertForPreTraining
    from bert.jobs import pretrain as job
    from bert.training import optim, sharding, step

    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    t = config.train
    schedule = optim.learning_rate_schedule(t.learning_rate, job.warmup_steps(t), t.steps)
    tx = optim.make_optimizer(t.optimizer, schedule, t.weight_decay)
    model = BertForPreTraining(bert_config)
    state = step.create_train_state(model, tx, mesh, config.seed, config.max_seq_length)
    return jax.device_get(state.params)


def _write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _read_csv(path: pathlib.Path) -> list[dict]:
    """Rows of a CSV `_write_csv` wrote, numbers as floats (an empty cell: not measured)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v != "" else "" for k, v in row.items()}
                for row in csv.DictReader(f)]  # fmt: skip


def _scalars(workdir: pathlib.Path, prefix: str) -> dict[int, dict[str, float]]:
    import tensorflow as tf

    rows: dict[int, dict[str, float]] = {}
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if value.tag.startswith(prefix) and array is not None and array.ndim == 0:
                    name = value.tag[len(prefix) :]  # scalars only (not the hyperparameters)
                    rows.setdefault(event.step, {})[name] = float(array)
    return rows


def curves(args) -> None:
    workdir = pathlib.Path(args.workdir)
    held_out = _scalars(workdir, "eval/")
    train = _scalars(workdir, "train/")
    rows = [{"step": s, **{k: held_out[s].get(k, "") for k in EVAL_TAGS},
             "train_loss": train.get(s, {}).get("loss", "")} for s in sorted(held_out)]  # fmt: skip
    _write_csv(CURVES / f"{args.name}.csv", rows)
    hf_path = CURVES / f"{args.name}_hf.csv"
    hf_rows = []
    if hf_path.is_file():
        with open(hf_path, newline="") as f:
            hf_rows = list(csv.DictReader(f))
    _plot(rows, hf_rows, CURVES / f"{args.name}.png")
    print(f"wrote {CURVES / f'{args.name}.csv'} ({len(rows)} evaluations) and the plot")


def _plot(rows, hf_rows, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, name in zip(axes, ("mlm_loss", "mlm_accuracy", "nsp_accuracy"), strict=True):
        ax.plot([r["step"] for r in rows], [float(r[name]) for r in rows], "o-", label="ours (JAX)")
        if hf_rows:
            ax.plot([int(r["step"]) for r in hf_rows], [float(r[name]) for r in hf_rows], "s--",
                    label="HF PyTorch + timm Lamb")  # fmt: skip
        ax.set_title(f"held-out {name.replace('_', ' ')}")
        ax.set_xlabel("step (batch 64, sequence 128)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"BERT-{SIZE} from scratch on 80 Wikipedia files, LAMB 6e-3")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sst2(args) -> None:
    from bert import convert, pretrained
    from bert.jobs import glue as glue_job
    from configs import glue as glue_config

    workdir = pathlib.Path(args.workdir)
    trained = pretrained.load(str(workdir))
    random_dir = pathlib.Path(tempfile.mkdtemp(prefix="random_init_"))
    import trajectory

    fresh = trajectory.initial_params(trained.config, seed=12345)
    convert.save_orbax(fresh, trained.config, random_dir / "model",
                       tokenizer_dir=trained.tokenizer.path.parent, overwrite=True)  # fmt: skip
    rates = [float(r) for r in args.learning_rates.split(",")]
    results = {f"{name} lr={rate:g}": [] for name in ("pretrained", "random") for rate in rates}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for rate in rates:
            for name, init in (("pretrained", workdir), ("random", random_dir / "model")):
                config = glue_config.get_config("task=sst2")
                config.init_from, config.data_dir, config.seed = str(init), str(SST2), seed
                config.max_seq_length, config.train_limit = 64, args.train_examples
                config.train.steps, config.train.batch_size = args.steps, 32
                config.train.learning_rate, config.predict_splits = rate, ()
                with tempfile.TemporaryDirectory() as out:
                    accuracy = glue_job.run(config, out)["dev"]["accuracy"]
                results[f"{name} lr={rate:g}"].append(accuracy)
                print(f"seed {seed} {name} lr={rate:g}: dev accuracy {accuracy:.4f}", flush=True)
    summary = {k: {"mean": sum(v) / len(v), "min": min(v), "max": max(v), "runs": v}
               for k, v in results.items()}  # fmt: skip
    path = CURVES / f"{args.name}_sst2.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("pretrain", "hf", "curves", "sst2"))
    parser.add_argument("--workdir", default="runs/mini_wiki")
    parser.add_argument("--name", default="mini_wiki", help="file names under bench/curves/")
    parser.add_argument("--minutes", type=float, default=30.0, help="hf: wall-clock budget")
    parser.add_argument("--seeds", type=int, default=3, help="sst2: seeds per initialisation")
    parser.add_argument("--first_seed", type=int, default=0, help="sst2: seeds from this one")
    parser.add_argument("--steps", type=int, default=500, help="sst2: fine-tuning steps")
    parser.add_argument("--learning_rates", default="1e-4", help="sst2: peak rates, a,b,...")
    parser.add_argument("--train_examples", type=int, default=16000, help="sst2: first N rows")
    args = parser.parse_args()
    {"pretrain": pretrain, "hf": hf, "curves": curves, "sst2": sst2}[args.what](args)


if __name__ == "__main__":
    main()
