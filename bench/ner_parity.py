"""NER fine-tuning parity at full size: all-MiniLM-L6-v2 on CoNLL-2003, our tagging step against HF
PyTorch's `BertForTokenClassification` with torch AdamW, on the same batches (a seeded random
order, each batch cut to its length bucket of 8) from the same classifier initialisation, then
entity F1 on the validation sentences for both. With dropout off the two runs must agree step by
step; with dropout on only the dropout masks differ, so the F1s show how far dropout's randomness
alone moves the result.

  python bench/ner_parity.py [--steps=250] [--train_sentences=8000] [--dropouts=0,0.1]
"""

import argparse
import dataclasses
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
DATA = ROOT.parent / "shared" / "data" / "conll2003"


def batches_in_order(arrays: dict, steps: int, batch_size: int, seed: int) -> list[dict]:
    """The fine-tuning job's random row order (no grouping), each batch cut to its bucket."""
    from bert.finetuning import buckets, order

    plan = order.make_row_order(len(arrays["input_ids"]), batch_size, steps, 0.0, 0, seed)
    full = arrays["input_ids"].shape[1]
    lengths = buckets.lengths_of(arrays, multiple=1)
    out = []
    for i in range(steps):
        rows = plan.rows(i)
        length = buckets.bucket_length(int(lengths[rows].max()), 8, full)
        out.append({k: v[rows][:, :length] for k, v in arrays.items() if k != "word_starts"})
    return out


def f1(predicted_ids, arrays: dict, sentences, labels) -> float:
    from bert.tasks import metrics, ner

    tags = ner.predictions_to_tags(predicted_ids, arrays, sentences, labels)
    return float(metrics.conll_scores(tags, [s.tags for s in sentences])["f1"])


def run(args: argparse.Namespace, dropout: float) -> dict:
    import finetune_compare as compare
    import jax
    import numpy as np
    import torch
    import trajectory
    import transformers

    from bert.heads import BertForTokenClassification
    from bert.jobs import settings
    from bert.tasks import ner
    from bert.tasks.features import ENCODER_INPUTS
    from configs import ner as ner_config

    path = args.model or compare.model_path()
    config = ner_config.get_config()
    config.init_from = path
    pre = settings.encoder(config)
    model_config = dataclasses.replace(
        pre.config, hidden_dropout=dropout, attention_dropout=dropout
    )
    train = ner.read_conll(args.data_dir / "train.txt")[: args.train_sentences]
    valid = ner.read_conll(args.data_dir / "valid.txt")[: args.valid_sentences or None]
    labels = ner.label_list(train)
    length = args.max_seq_length
    train_arrays = ner.convert_sentences_to_features(train, labels, pre.tokenizer, length)
    valid_arrays = ner.window_features(valid, labels, pre.tokenizer, length, config.window_stride)
    batches = batches_in_order(train_arrays, args.steps, args.batch_size, args.seed)
    recipe = trajectory.Recipe("adamw", args.learning_rate, round(0.1 * args.steps), args.steps)
    params = trajectory.classifier_params(model_config, {"bert": pre.encoder}, len(labels),
                                          seed=args.seed)  # fmt: skip
    inputs = [{k: valid_arrays[k][s : s + 64] for k in ENCODER_INPUTS}
              for s in range(0, len(valid_arrays["input_ids"]), 64)]  # fmt: skip

    started = time.perf_counter()
    ours, trained = trajectory.ours_tagging(params, model_config, recipe, batches)
    ours_s = time.perf_counter() - started
    model = BertForTokenClassification(model_config, len(labels))
    apply = jax.jit(lambda p, b: model.apply({"params": p}, *(b[k] for k in ENCODER_INPUTS)))
    ours_ids = np.concatenate([np.asarray(apply(trained, b)).argmax(-1) for b in inputs])

    hf = trajectory.hf_head(transformers.BertForTokenClassification, path, params["classifier"],
                            dropout)  # fmt: skip
    started = time.perf_counter()
    theirs = trajectory.hf_tagging(hf, recipe, batches)
    hf_s = time.perf_counter() - started
    hf.eval()
    with torch.no_grad():
        hf_ids = np.concatenate([hf(**trajectory.encoder_inputs(b)).logits.argmax(-1).numpy()
                                 for b in inputs])  # fmt: skip
    diff = trajectory.relative_differences(ours, theirs)
    return {
        "dropout": dropout,
        "first_loss": ours[0],
        "last_loss": ours[-1],
        "hf_last_loss": theirs[-1],
        "max_relative_difference": float(diff.max()),
        "worst_step": int(diff.argmax()) + 1,
        "f1": f1(ours_ids, valid_arrays, valid, labels),
        "hf_f1": f1(hf_ids, valid_arrays, valid, labels),
        "same_tags": float(np.mean((ours_ids == hf_ids)[valid_arrays["word_starts"] == 1])),
        "ours_s": ours_s,
        "hf_s": hf_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=pathlib.Path, default=DATA, help="CoNLL-2003 folder")
    parser.add_argument("--model", default="", help="HF directory; empty: all-MiniLM-L6-v2")
    parser.add_argument("--train_sentences", type=int, default=8000, help="the first N")
    parser.add_argument("--valid_sentences", type=int, default=0, help="the first N; 0: all")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0, help="row order and classifier init")
    parser.add_argument("--dropouts", default="0,0.1", help="comma-separated rates to run")
    args = parser.parse_args()
    if not (args.data_dir / "train.txt").is_file():
        raise SystemExit(f"{args.data_dir}/train.txt: not found (set --data_dir)")
    rows = []
    for dropout in (float(d) for d in args.dropouts.split(",")):
        rows.append(run(args, dropout))
        print(json.dumps(rows[-1]), flush=True)
    model = args.model or "all-MiniLM-L6-v2"
    print(f"\nmachine: {platform.processor() or platform.machine()}; {model}, "
          f"{args.train_sentences} sentences, {args.steps} steps, batch {args.batch_size}, "
          f"lr {args.learning_rate}, seed {args.seed}")  # fmt: skip
    print("| dropout | loss step 1 -> last (ours / HF) | max rel. diff (step) | dev F1 ours / HF "
          "| same tags | ours s | HF s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dropout']} | {r['first_loss']:.4f} -> {r['last_loss']:.4f} / "
              f"{r['hf_last_loss']:.4f} | {r['max_relative_difference']:.2e} ({r['worst_step']}) "
              f"| {100 * r['f1']:.2f} / {100 * r['hf_f1']:.2f} | {100 * r['same_tags']:.2f}% "
              f"| {r['ours_s']:.0f} | {r['hf_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
