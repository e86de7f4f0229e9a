"""CoNLL-2003 NER fine-tuning from all-MiniLM-L6-v2: this project's NER job vs HF PyTorch.

Both fine-tune the same pretrained checkpoint on the first --train_sentences sentences of
CoNLL-2003 train (the tag on each word's first sub-token, the other sub-tokens ignored; ours in
length buckets of --pad_to_multiple_of with rows of similar lengths batched together, HF with
`DataCollatorForTokenClassification`, each batch padded to its longest row) for --steps AdamW
steps (linear warm-up and decay, no weight decay on biases and LayerNorm weights, global-norm
clipping, the checkpoint's dropout), in float32 on CPU, then tag the validation sentences. Both
sides' tags are scored by the same entity-level F1 (conlleval rules, bert/tasks/metrics.py).
Each (implementation, seed) runs in its own process; the columns are those of
bench/finetune_sst2.py (total: the whole job, imports excluded).

  python bench/finetune_ner.py --which=both --seeds=1
"""

import argparse
import os
import shutil
import sys
import tempfile

import finetune_compare as compare

DEFAULT_DATA = os.path.normpath(os.path.join(compare.ROOT, "..", "shared", "data", "conll2003"))


def read_split(args: argparse.Namespace, split: str, limit: int = 0):
    sys.path.insert(0, compare.ROOT)
    from bert.tasks import ner

    path = os.path.join(args.data_dir, f"{split}.txt")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found (set --data_dir to the CoNLL-2003 folder)")
    sentences = ner.read_conll(path)
    return sentences[:limit] if limit else sentences


def run_hf(args: argparse.Namespace, seed: int) -> dict:
    """Fine-tunes with transformers + torch; returns entity F1 and times."""
    import torch
    import transformers

    sys.path.insert(0, compare.ROOT)
    from bert.tasks import metrics, ner

    path = compare.model_path()
    clock = compare.Clock()
    train = read_split(args, "train", args.train_sentences)
    valid = read_split(args, "valid")
    labels = ner.label_list(train)
    torch.manual_seed(seed)  # the tagger's initialisation, then dropout
    tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
    model = transformers.BertForTokenClassification.from_pretrained(path, num_labels=len(labels))
    collator = transformers.DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    label_id = {tag: i for i, tag in enumerate(labels)}

    def encode(sentences) -> list[dict]:
        encoded = tokenizer([s.words for s in sentences], is_split_into_words=True,
                            truncation=True, max_length=args.max_seq_length)  # fmt: skip
        rows = []
        for i, sentence in enumerate(sentences):
            words, previous, tags = encoded.word_ids(i), None, []
            for word in words:  # the tag on each word's first sub-token, -100 elsewhere
                first = word is not None and word != previous
                tags.append(label_id[sentence.tags[word]] if first else -100)
                previous = word
            rows.append({**{k: v[i] for k, v in encoded.items()}, "labels": tags})
        return rows

    train_rows, valid_rows = encode(train), encode(valid)
    train_s = compare.hf_train(
        model,
        args,
        len(train_rows),
        seed,
        lambda index: collator([train_rows[int(i)] for i in index]),
    )
    model.eval()
    predicted = []
    with torch.no_grad():
        for start in range(0, len(valid_rows), 64):
            batch = collator(valid_rows[start : start + 64])
            tags = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
            for row, gold in zip(tags.tolist(), batch["labels"].tolist(), strict=True):
                predicted.append([labels[t] for t, g in zip(row, gold, strict=True) if g != -100])
    for tags, sentence in zip(predicted, valid, strict=True):  # words cut away: O
        tags.extend(["O"] * (len(sentence.tags) - len(tags)))
    f1 = metrics.conll_scores(predicted, [s.tags for s in valid])["f1"]
    return {"f1": f1, **clock.read(), "train_s": train_s}


def run_ours(args: argparse.Namespace, seed: int) -> dict:
    """Fine-tunes with this project's NER job; the time covers the whole ner_job.run call."""
    sys.path.insert(0, compare.ROOT)
    from bert.jobs import ner as ner_job
    from configs import ner as ner_config

    config = ner_config.get_config()
    compare.configure_ours(config, args, seed)
    config.data_dir = args.data_dir
    config.train_limit = args.train_sentences
    workdir = tempfile.mkdtemp(prefix="finetune_ner_")
    try:
        clock = compare.Clock()
        results = ner_job.run(config, workdir)
        times = clock.read()
        train_s = compare.logged_train_seconds(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"f1": float(results["valid"]["f1"]), **times, "train_s": train_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=DEFAULT_DATA, help="CoNLL-2003 folder")
    parser.add_argument("--train_sentences", type=int, default=0, help="first N; 0: all")
    compare.add_flags(parser, max_seq_length=128, learning_rate=5e-5, steps=438)
    args = parser.parse_args()
    if not args.worker and not os.path.isdir(args.data_dir):
        raise SystemExit(f"--data_dir={args.data_dir}: no such folder (the CoNLL-2003 folder)")
    setting = f"CoNLL-2003 train ({args.train_sentences or 'all'} sentences)"
    compare.drive(args, os.path.abspath(__file__), {"ours": run_ours, "hf": run_hf}, "f1", setting)


if __name__ == "__main__":
    main()
