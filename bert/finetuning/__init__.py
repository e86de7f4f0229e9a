"""The fine-tuning machinery every fine-tuning job shares: one home for building a batch.

spec.py       what a job hands the run: Spec (model, loss, arrays) and EvalSet
objective.py  a head model's loss over named inputs, as the train step takes it
order.py      which rows each step takes (seeded, resumable, grouped by length)
buckets.py    length buckets: used lengths, bucket sizes, cutting rows to them
packing.py    several sequences packed whole into one row (first-fit), with their places
batches.py    each step's global batch: cut to buckets or packed, this host's share
predict.py    prediction in length buckets and the evaluation sets' metrics
finetune.py   Settings, the encoder to start from, and the run (bert/training/runner.py)
"""
