"""Hard-negative mining (CLI): (anchor, positive) pairs in, triplets or n-tuples out, with
sentence-transformers' controls (bert/tasks/mining.py says how each works).

  python -m bert.mine MODEL --pairs=pairs.jsonl --output=triplets.jsonl \
      [--columns=anchor,positive] [--corpus=more.txt] [--range_min=10 --range_max=50] \
      [--relative_margin=0.05] [--num_negatives=5] [--sampling=top|random] \
      [--output_format=triplet|n-tuple]

MODEL is any checkpoint bert/pretrained.py loads (a workdir of ours, an HF or
sentence-transformers directory, a Hub model id), embedding with the pooling it records (mean
where none) and L2-normalised; the pairs are any file bert/tasks/pairs.py reads (TSV, CSV, JSONL,
Parquet, SQuAD JSON); --corpus, a text file of one document a line. The search is the project's
retrieval top-k (bert/tasks/retrieval.py: the corpus sharded over the devices, in chunks). The
output is JSON Lines or, for a .parquet name, Parquet, written whole or not at all.
"""

import json
import sys

from bert import embed, pretrained
from bert.tasks import mining, pairs, retrieval
from util import atomic, console, paths, text_files
from util.errors import UserError


def _parser():
    parser = console.ArgumentParser(prog="python -m bert.mine",
                                    description="Mine hard negatives for pairs.")  # fmt: skip
    add = parser.add_argument
    add("model", help="a workdir of ours, an HF or sentence-transformers directory, a Hub id")
    add("--pairs", required=True, help="(anchor, positive) pairs: a file bert/tasks/pairs.py reads")
    add(
        "--columns", default="", help="the pairs' two columns, names or positions (anchor,positive)"
    )
    add("--pairs_format", default="auto", help="auto (by suffix), tsv, csv, jsonl, parquet, squad")
    add("--corpus", default="", help="a text file of more documents, one a line")
    add("--output", required=True, help="the rows to write: .jsonl, or .parquet")
    add("--range_min", type=int, default=0)
    add("--range_max", type=int, default=None)
    add("--max_score", type=float, default=None)
    add("--min_score", type=float, default=None)
    add("--absolute_margin", type=float, default=None)
    add("--relative_margin", type=float, default=None)
    add("--num_negatives", type=int, default=3)
    add("--sampling", default="top", choices=mining.SAMPLINGS)
    add("--output_format", default="triplet", choices=mining.FORMATS)
    add("--seed", type=int, default=0, help="--sampling=random's draws")
    add("--max_seq_length", type=int, default=256)
    add("--batch_size", type=int, default=64, help="texts per embedding batch")
    add("--corpus_chunk", type=int, default=8192, help="corpus rows scored at a time per device")
    add("--query_chunk", type=int, default=256, help="queries scored at a time")
    return parser


def write_rows(path: str, rows: list[dict[str, str]]) -> None:
    """JSON Lines, or Parquet for a .parquet name; atomically."""
    if path.endswith(".parquet"):
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        columns = list(rows[0]) if rows else ["anchor", "positive", "negative"]
        table = pa.table({c: [r[c] for r in rows] for c in columns})
        with atomic.open_atomically(path) as f:
            pq.write_table(table, f)
        return
    atomic.write_atomically(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths.use_fsspec_backend()
    controls = mining.Controls(
        args.range_min, args.range_max, args.max_score, args.min_score, args.absolute_margin,
        args.relative_margin, args.num_negatives, args.sampling, args.output_format, args.seed,
    )  # fmt: skip
    try:
        data = pairs.read_pairs(args.pairs, "pairs", args.columns, args.pairs_format)
        corpus = [line.strip() for _, line in text_files.lines(args.corpus) if line.strip()] if (
            args.corpus) else []  # fmt: skip
        model = pretrained.load(args.model, fields=("MODEL", "--tokenizer"))
        pooling = model.pooling or "mean"

        def vectors(texts: list[str]):
            return embed.embed(model, texts, args.max_seq_length, args.batch_size, pooling, True)

        options = retrieval.RetrievalOptions("cosine", (1,), (10,), (10,), (100,),
                                             args.corpus_chunk, args.query_chunk)  # fmt: skip

        def search(queries, documents, k):
            return retrieval.search(queries, documents, k, options)

        rows = mining.mine(data.anchors, data.positives, vectors, search, controls, corpus)
        write_rows(args.output, rows)
    except UserError as e:
        return console.report(e)
    print(f"{args.output}: {len(rows):,} rows from {len(data):,} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
