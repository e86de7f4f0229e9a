"""Benchmark: the cost of checkpoint safety. Save and restore times of a training state with
the project's checkpoints (state + meta + fingerprint: signature and on-device checksums; the
restore reads every array and checks its checksum) against plain Orbax as the project used it
before (state + meta, a restore that returns without a check), in the same run.

    .venv/bin/python bench/checkpoint_save.py [--size=mini] [--repeats=5] [--devices=2]

Each save is timed to completion (`wait_until_finished`), so async saves count their writes.
A size from configs/common.py (BERT with the uncased vocabulary, LAMB state: parameters and two
moments). Reported: the median of `--repeats` saves and restores after one warm-up each (the
first pays the checksums' compilation, reported apart).
"""

import argparse
import os
import pathlib
import shlex
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

    import jax
    import orbax.checkpoint as ocp

    from bert.heads import BertForPreTraining
    from bert.model import BertConfig
    from bert.training import checkpoints, optim, sharding, step
    from configs import common

    layers, hidden = common.SIZES[args.size]
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_layers=layers,
                        num_heads=max(hidden // 64, 1), intermediate_size=4 * hidden)  # fmt: skip
    model = BertForPreTraining(config)
    tx = optim.make_optimizer("lamb", optim.learning_rate_schedule(1e-4, 10, 1000), 0.01)
    mesh = sharding.make_mesh((-1, 1, 1))
    state = step.create_train_state(model, tx, mesh, 0, 128)
    abstract, shardings = step.state_shardings(model, tx, mesh, 128)
    target = checkpoints._abstract(abstract, shardings)
    count = sum(x.size for x in jax.tree.leaves(state))
    meta = {"step": 0}

    def plain(directory):
        manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=2, create=True), item_names=("state", "meta"))  # fmt: skip

        def save(i):
            items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
            manager.save(i, args=ocp.args.Composite(**items), force=True)
            manager.wait_until_finished()

        def restore(i):
            args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
            return manager.restore(i, args=args).state

        return save, restore

    def ours(directory):
        ckpts = checkpoints.Checkpoints(directory.parent, max_to_keep=2)

        def save(i):
            ckpts.save(i, state, meta)
            ckpts.wait()

        return save, lambda i: ckpts.restore(i, abstract, shardings)[0]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("plain Orbax (before)", plain), ("ours (after)", ours)):
            save, restore = make(pathlib.Path(tmp) / name.split()[0] / "checkpoints")
            times = {"save": [], "restore": []}
            for i in range(args.repeats + 1):
                start = time.perf_counter()
                save(i + 1)
                times["save"].append(time.perf_counter() - start)
                start = time.perf_counter()
                jax.block_until_ready(restore(i + 1))
                times["restore"].append(time.perf_counter() - start)
            rows.append((name, times))
    print(f"BERT-{args.size} state: {count / 1e6:.1f} M numbers, {count * 4 / 2**20:.0f} MiB; "
          f"{args.devices} devices; median of {args.repeats} after one warm-up")  # fmt: skip
    print(f"{'':22} {'save s':>8} {'first':>8} {'restore s':>10} {'first':>8}")
    for name, t in rows:
        print(f"{name:22} {statistics.median(t['save'][1:]):8.3f} {t['save'][0]:8.3f} "
              f"{statistics.median(t['restore'][1:]):10.3f} {t['restore'][0]:8.3f}")  # fmt: skip
    print("command: .venv/bin/python bench/checkpoint_save.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
