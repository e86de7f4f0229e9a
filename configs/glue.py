"""Fine-tuning on a GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli.

Usage:
  python main.py --config=configs/glue.py:task=sst2 --workdir=runs/sst2 \
      --config.init_from=path/to/checkpoint --config.data_dir=glue_data/SST-2

`init_from` is an HF directory, a Google TF checkpoint, a pre-training workdir of ours or a Hub
model id (org/name[@revision]); the tokenizer beside it is used unless `tokenizer` names one.
With `data_dir` empty the data comes from TFDS `glue/<task>` (downloaded once). Dev metrics go
to workdir/eval_results.json and TensorBoard; predictions to workdir/predictions/ (dev as
<split>.tsv, test as the GLUE server's file names, e.g. SST-2.tsv, MNLI-m.tsv).
"""

import ml_collections

from bert.tasks import glue
from configs import common
from util.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"task": ""})
    if not args["task"]:
        raise UserError(f"configs/glue.py needs task=NAME, one of {', '.join(glue.TASKS)}")
    task = glue.get_task(str(args["task"]))
    config = ml_collections.ConfigDict()
    config.task = "glue"  # the job main.py runs
    config.glue_task = task.name  # which GLUE task
    common.finetune_common(config, max_seq_length=128)
    config.data_dir = ""  # the task's folder of the GLUE download; empty: TFDS glue/<task>
    config.tfds_data_dir = ""  # TFDS cache folder when data_dir is empty; empty: TFDS default
    dev = tuple(s for s in task.splits if s.startswith("dev"))
    config.eval_splits = dev  # labelled splits scored and written as predictions/<split>.tsv
    config.predict_splits = tuple(task.submission_names)  # test splits -> submission files
    # BERT's recipe: batch 32, 3 epochs, learning rate picked from {5e-5, 3e-5, 2e-5}.
    config.train = common.finetune_train(batch_size=32, learning_rate=2e-5, epochs=3.0)
    return config
