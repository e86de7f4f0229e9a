"""Trajectory parity at a larger scale than the test: BERT-mini, 300 steps of our train step and
of HF PyTorch (timm's Lamb / torch AdamW) from the same weights on the same pipeline batches,
dropout off, float32. Prints the largest relative loss difference and each side's wall-clock.

  python bench/trajectory_parity.py [--steps=300] [--optimizers=lamb,adamw]
"""

import argparse
import dataclasses
import json
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
SHARED = ROOT.parent / "shared" / "data"
RATES = {"lamb": 6e-3, "adamw": 1e-3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--optimizers", default="lamb,adamw")
    args = parser.parse_args()

    import trajectory

    from bert.model import BertConfig
    from configs import common

    sizes = common.model_config("mini", 30522).to_dict()
    config = trajectory.no_dropout(BertConfig.from_dict(sizes))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        batches = trajectory.pipeline_batches(SHARED, tmp / "data", args.steps, args.batch_size,
                                              args.seq_length, 20)  # fmt: skip
        params = trajectory.initial_params(config)
        directory = trajectory.export(params, config, tmp / "hf")
        rows = []
        for name in args.optimizers.split(","):
            warmup = args.steps // 10
            recipe = trajectory.Recipe(name, RATES[name], warmup, args.steps)
            started = time.perf_counter()
            ours = trajectory.ours_pretraining(params, config, recipe, batches)
            ours_s = time.perf_counter() - started
            started = time.perf_counter()
            theirs = trajectory.hf_pretraining(directory, recipe, batches)
            theirs_s = time.perf_counter() - started
            diff = trajectory.relative_differences(ours, theirs)
            row = {
                **dataclasses.asdict(recipe),
                "first_loss": ours[0],
                "last_loss": ours[-1],
                "hf_last_loss": theirs[-1],
                "max_relative_difference": float(diff.max()),
                "worst_step": int(diff.argmax()) + 1,
                "ours_s": ours_s,
                "hf_s": theirs_s,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {platform.node()}")
    print("| optimizer | loss step 1 -> last (ours / HF) | max rel. diff (step) | ours s | HF s |")
    for r in rows:
        print(f"| {r['optimizer']} {r['learning_rate']} | {r['first_loss']:.4f} -> "
              f"{r['last_loss']:.4f} / {r['hf_last_loss']:.4f} | "
              f"{r['max_relative_difference']:.2e} ({r['worst_step']}) | {r['ours_s']:.0f} | "
              f"{r['hf_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
