"""Sentence embeddings: evaluate on STS or on retrieval, or encode a text file to a .npy matrix.

Usage:
  python main.py --config=configs/sts.py --workdir=runs/sts \
      --config.init_from=path/to/checkpoint --config.eval_file=stsbenchmark/sts-dev.csv
  python main.py --config=configs/sts.py:mode=encode --workdir=runs/emb \
      --config.init_from=path/to/checkpoint --config.encode_input=sentences.txt
  python main.py --config=configs/sts.py:mode=retrieval --workdir=runs/ir \
      --config.init_from=path/to/checkpoint --config.retrieval.squad_file=dev-v1.1.json

The arg after the colon takes `mode` (evaluate, encode or retrieval; default evaluate).
"""

import ml_collections

from configs import common
from util.errors import UserError


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"mode": "evaluate"})
    if args["mode"] not in ("evaluate", "encode", "retrieval"):
        raise UserError(f"config arg mode={args['mode']!r} must be evaluate, encode or retrieval")
    config = ml_collections.ConfigDict()
    config.task = "sts"  # the job main.py runs
    # evaluate: Spearman/Pearson on STS; encode: text file -> .npy; retrieval: recall, MRR, nDCG
    config.mode = args["mode"]
    # checkpoint: a workdir of ours, an HF or Google TF directory, or a Hub model id org/name[@rev]
    config.init_from = ""
    # tokenizer file or folder, or a Hub model id; empty: the one beside the checkpoint
    config.tokenizer = ""
    config.eval_file = ""  # STS benchmark .csv (tab-separated) or GLUE STS-B .tsv with scores
    config.encode_input = ""  # text file, one sentence per line (mode=encode)
    config.encode_output = "embeddings.npy"  # .npy written in the workdir (mode=encode)
    # mean (over real tokens), cls or max; empty: the checkpoint's (a sentence-transformers
    # directory's Pooling module, a workdir's recorded one), else mean
    config.pooling = ""
    # L2-normalise the embeddings (mode=encode); unset (None): the checkpoint's (a Normalize
    # module, a workdir's recorded one), else True; --config.normalize=false sets it
    config.normalize = ml_collections.config_dict.placeholder(bool)
    config.max_seq_length = 256  # tokens per sentence, [CLS] and [SEP] included
    config.eval_batch_size = 64  # sentences per forward pass
    # sentences go by length, each batch padded to its length bucket: this times 1, 2, 3, 4, 6,
    # 8, 12, ... (bert/finetuning/buckets.py; few compiled shapes); 0: max_seq_length
    config.pad_to_multiple_of = 8
    config.retrieval = retrieval_config()
    return config


def retrieval_config() -> ml_collections.ConfigDict:
    """The retrieval evaluation section (mode=retrieval here; also used during training)."""
    r = ml_collections.ConfigDict()
    # SQuAD JSON: the last `held_out_articles` articles' questions are the queries, their
    # paragraphs the corpus, each question's own paragraph the relevant document
    r.squad_file = ""
    # articles held out, counted from the end of the file (all of them: the whole file)
    r.held_out_articles = 10
    # or a BEIR-layout set: corpus.jsonl ({"_id", "title", "text"}), queries.jsonl ({"_id",
    # "text"}), qrels .tsv (header, then query-id, corpus-id, score; score > 0 is relevant)
    r.corpus_file = ""
    r.queries_file = ""
    r.qrels_file = ""
    r.score = "cosine"  # cosine or dot (dot product of the embeddings as `normalize` leaves them)
    r.accuracy_at = (1, 3, 5, 10)  # k of accuracy@k, precision@k, recall@k (sentence-transformers')
    r.mrr_at = (10,)  # k of MRR@k
    r.ndcg_at = (10,)  # k of nDCG@k
    r.map_at = (100,)  # k of MAP@k
    r.corpus_chunk = 8192  # corpus rows scored at a time per device (bounds memory)
    r.query_chunk = 256  # queries scored at a time
    return r
