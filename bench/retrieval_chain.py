"""From raw text to retrieval (docs/embeddings.md): an encoder pre-trained on Wikipedia text,
then SimCSE on sentences of the same text, then multiple-negatives ranking on SQuAD
(question, paragraph) pairs, then retrieval of the held-out articles' paragraphs for their
questions; against the same chain from a randomly initialised encoder of the same
architecture and tokenizer.

  python bench/retrieval_chain.py --pretrained=runs/recipes/modern  # curves/retrieval_chain.json
  python bench/retrieval_chain.py --pretrained=WORKDIR --steps=5    # a check of the setup

--pretrained is a pre-training workdir (bench/recipes.py's runs: the 80 Wikipedia files of
../shared/data). Each stage is the embeddings job (configs/embeddings.py) run in this process
on the encoder the stage before left; a stage whose workdir holds its results is read back, so
the bench resumes where it stopped.

SimCSE (SIMCSE): the first SIMCSE_SENTENCES sentences of at least MIN_WORDS words of the
Wikipedia files, in file order (the pre-training run read them too), each paired with itself
(train_format=text), the two sides told apart by their dropout draws; sentence length and
scale as the SimCSE paper's unsupervised recipe (32 tokens, temperature 0.05), the learning
rate a mini model takes. Ranking (RANKING): SQuAD v1.1 dev's articles but the last 10, the
question and its paragraph, no text twice in a batch; retrieval on the last 10 articles (1,988
questions over 421 paragraphs; all-MiniLM-L6-v2 scores recall@1 0.689 there, docs/embeddings.md).
Both stages report recall@1 and MRR@10 on the held-out articles.
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CURVES = ROOT / "bench" / "curves"
DATA = ROOT.parent / "shared" / "data"
SQUAD = str(DATA / "squad" / "dev-v1.1.json")  # pairs of its articles but the last 10; those 10
SIMCSE_SENTENCES = 64_000  # one epoch of 1,000 steps of batch 64
MIN_WORDS = 5  # shorter lines of Wikipedia text are headings and list items
# The settings of each stage (configs/embeddings.py's fields).
SIMCSE = {"train_format": "text", "train_kind": "pairs", "loss": "mnrl", "max_seq_length": 32,
          "train.batch_size": 64, "train.learning_rate": 1e-4, "train.epochs": 1.0}  # fmt: skip
RANKING = {"train_format": "squad", "train_kind": "pairs", "loss": "mnrl",
           "max_seq_length": 128, "train.batch_size": 64, "train.learning_rate": 1e-4,
           "train.epochs": 3.0, "train.no_duplicates": True}  # fmt: skip
RETRIEVAL = ("cosine_accuracy@1", "cosine_mrr@10")  # recall@1 equals accuracy@1 here: one
# relevant paragraph per question
RANDOM_SEED = 12345  # the random initialisation's (as bench/recipes.py's)


def write_sentences(path: pathlib.Path, limit: int) -> None:
    """The first `limit` sentences of MIN_WORDS or more words of the Wikipedia files, a line
    each (written to a temporary name, then renamed)."""
    from input_pipeline import corpora

    kept = []
    for file in sorted((DATA / "wikipedia" / "AA").glob("wiki_*")):
        for document in corpora.read_wikiextractor(file):
            kept.extend(s for s in document if len(s.split()) >= MIN_WORDS)
        if len(kept) >= limit:
            break
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(kept[:limit]) + "\n", encoding="utf-8")
    temporary.rename(path)


def stage_config(settings: dict, train_file: str, steps: int):
    from configs import embeddings as embeddings_config

    config = embeddings_config.get_config()
    config.train_file = train_file
    config.retrieval.squad_file = SQUAD
    config.train.log_every = 50
    config.train.checkpoint_every = 100_000  # the end's alone
    for key, value in settings.items():
        section, _, field = key.rpartition(".")
        (config.train if section else config)[field] = value
    if steps:
        config.train.steps = steps
    return config


def stage(name: str, config, workdir: pathlib.Path, encoder) -> dict:
    """Runs (or reads back) one stage on `encoder`: its retrieval figures; the trained encoder
    is the workdir's."""
    from bert.jobs import embeddings

    done = workdir / "eval_results.json"
    if not done.is_file():
        embeddings.run(config, str(workdir), encoder=encoder)
    retrieval = json.loads(done.read_text())["retrieval"]
    figures = {k: retrieval[k] for k in RETRIEVAL}
    print(f"{workdir.parent.name} after {name}: {figures}", flush=True)
    return figures


def chain(encoder, runs: pathlib.Path, sentences: pathlib.Path, steps: int) -> dict:
    from bert import pretrained

    simcse = stage("simcse", stage_config(SIMCSE, str(sentences), steps), runs / "simcse",
                   encoder)  # fmt: skip
    encoder = pretrained.load(str(runs / "simcse"))
    ranking = stage("ranking", stage_config(RANKING, SQUAD, steps), runs / "ranking", encoder)
    return {"simcse": simcse, "ranking": ranking}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True, help="a pre-training workdir")
    parser.add_argument("--runs", default="runs/chain", help="the stages' workdirs")
    parser.add_argument("--steps", type=int, default=0, help=">0: every stage N steps (a check)")
    args = parser.parse_args()
    import dataclasses

    from bert import pretrained

    runs = pathlib.Path(args.runs) / (f"steps_{args.steps}" if args.steps else "full")
    runs.mkdir(parents=True, exist_ok=True)
    sentences = pathlib.Path(args.runs) / "simcse_sentences.txt"
    if not sentences.is_file():
        write_sentences(sentences, SIMCSE_SENTENCES)
    trained = pretrained.load(args.pretrained)
    trained = dataclasses.replace(trained, params={"bert": trained.params["bert"]})
    start = {
        "pretrained": trained,
        "random": pretrained.random_encoder(trained.config, trained.tokenizer, RANDOM_SEED),
    }
    results = {name: chain(encoder, runs / name, sentences, args.steps)
               for name, encoder in start.items()}  # fmt: skip
    summary = {"pretrained": args.pretrained, "step": trained.step, "simcse": SIMCSE,
               "ranking": RANKING, "simcse_sentences": SIMCSE_SENTENCES, **results}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if not args.steps:
        path = CURVES / "retrieval_chain.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
