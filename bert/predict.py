"""Predictions from a trained workdir, as transformers' pipelines give them (CLI and Python).

  python -m bert.predict WORKDIR --input=FILE|- [--output=FILE.jsonl] [--format=auto|lines|jsonl]
  Predictor("runs/reviews")(["a text", ("a text", "its pair")])  # -> [dict, dict]

One JSON object per input, in the input's order; what it holds follows the task the workdir's
checkpoint records:

* classify/<problem type>, glue/<task>: {"label", "score", "probabilities"} (softmax: the most
  probable class, its probability, every class's); multi-label {"labels", "probabilities"} (a
  sigmoid per class, the classes above the job's threshold); regression {"score"}.
* ner (the ner and tag jobs): {"entities": [{"entity_group", "score", "word", "start", "end"}]}.
  A word's tag is its first sub-token's, as the job trains it (transformers' token-classification
  pipeline with aggregation_strategy="first"); an entity is a run of words by conlleval's rules
  (for IOB tags: one type, no B- inside), its score their mean, "word" the text between its
  character offsets. Text is cut into words as the tokenizer cuts it (BERT's: at spaces and
  punctuation, every ideograph a word of its own); JSON Lines may give the words ("tokens").
* squad: {"answer", "start", "end", "score"} by the job's n-best decoding (score: start + end
  logit); a SQuAD v2.0 question the model finds unanswerable gets answer "" and start -1.
* anything else (pretrain, embeddings): {"embedding"}, with the pooling and normalisation the
  checkpoint records (mean pooling, normalised, where it records none).

Input: one text a line (a tab between the two texts of a pair, or between a question and its
context), or JSON Lines objects: {"text"} or {"text", "text_pair"}, {"tokens"} (ner),
{"question", "context"} (squad). The job's settings (max_seq_length, threshold, the windows and
n-best of squad and ner, pad_to_multiple_of, eval_batch_size) come from WORKDIR/config.json.
Rows run in length buckets on every local device, through the fine-tuning jobs' own prediction
code, so that a workdir predicts its dev rows as its job did.
"""

import json
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bert import embed, heads
from bert import pretrained as loader
from bert.finetuning import predict as bucketed
from bert.tasks import classification, features, glue, metrics, ner, squad
from bert.training import sharding
from input_pipeline import token_offsets
from util import atomic, console, paths, text_files
from util.errors import UserError

Item = str | tuple[str, str] | dict[str, Any]


def _task_kind(task: str) -> str:
    if task.startswith(("classify/", "glue/")):
        return "classify"
    return task if task in ("ner", "squad") else "embed"


class Predictor:
    """A workdir's model, ready to predict lists of inputs (see the module's docstring)."""

    def __init__(self, workdir: str, step: int | None = None, batch_size: int = 0):
        self.model = loader.load(workdir, step=step, fields=("WORKDIR", "tokenizer"))
        config = paths.path(workdir) / "config.json"
        self.settings = json.loads(config.read_text()) if config.is_file() else {}
        self.kind = _task_kind(self.model.task)
        self.max_seq_length = int(self.settings.get("max_seq_length", 0)) or (
            self.model.max_seq_length or 128
        )
        self.multiple = int(self.settings.get("pad_to_multiple_of", 8))
        self.mesh = sharding.make_mesh((-1, 1, 1), jax.local_devices())
        divisor = sharding.batch_divisor(self.mesh)
        wanted = batch_size or int(self.settings.get("eval_batch_size", 64))
        self.batch_size = -(-wanted // divisor) * divisor  # a multiple of the devices
        self._params = None

    def __call__(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """One result per item, in order."""
        if not items:
            return []
        return getattr(self, f"_{self.kind}")(list(items))

    def _run(self, module, inputs: dict[str, np.ndarray], multiple: int):
        """The module's outputs for every row (bert/finetuning/predict.py's buckets)."""
        if self._params is None:
            self._params = jax.device_put(self.model.params, sharding.replicated(self.mesh))

        def step(params, batch):
            return module.apply({"params": params}, *(batch[k] for k in features.ENCODER_INPUTS))

        jitted = jax.jit(
            step,
            in_shardings=(sharding.replicated(self.mesh),
                          sharding.batch_shardings(self.mesh, features.ENCODER_INPUTS)),
            out_shardings=sharding.replicated(self.mesh),
        )  # fmt: skip
        inputs = {k: inputs[k] for k in features.ENCODER_INPUTS}
        return bucketed.predict(jitted, self._params, inputs, self.batch_size, self.mesh, multiple)

    def _classify(self, items: list[Item]) -> list[dict[str, Any]]:
        task = self.model.task
        names = self.model.labels
        if task.startswith("glue/"):
            names = names or glue.get_task(task.removeprefix("glue/")).labels
            problem = "regression" if not names else "single_label"
        else:
            problem = task.removeprefix("classify/")
        firsts, seconds = _texts(items)
        inputs = features.encode_texts(self.model.tokenizer, firsts, seconds, self.max_seq_length)
        module = heads.BertForSequenceClassification(self.model.config, max(len(names), 1))
        outputs = self._run(module, inputs, self.multiple)
        threshold = float(self.settings.get("threshold", 0.5))
        return classification.prediction_rows(outputs, names, problem, threshold)

    def _ner(self, items: list[Item]) -> list[dict[str, Any]]:
        texts, spans, sentences = [], [], []
        for number, item in enumerate(items, start=1):
            text, words = self._words(item, number)
            texts.append(text)
            spans.append(words)
            sentences.append(ner.Sentence([text[s:e] for s, e in words], ["O"] * len(words)))
        labels = list(self.model.labels)
        stride = int(self.settings.get("window_stride", 0))
        present = [s for s in sentences if s.words]
        feats = ner.window_features(
            present, labels, self.model.tokenizer, self.max_seq_length, stride
        )
        module = heads.BertForTokenClassification(self.model.config, len(labels))
        logits = self._run(module, feats, self.multiple) if present else None
        per_word = iter(ner.word_values(logits, feats, present) if present else [])
        results = []
        for text, words, sentence in zip(texts, spans, sentences, strict=True):
            if not sentence.words:
                results.append({"entities": []})
                continue
            scores = classification.probabilities(next(per_word), "single_label")
            results.append({"entities": _entities(text, words, scores, labels)})
        return results

    def _words(self, item: Item, number: int) -> tuple[str, list[tuple[int, int]]]:
        """The text and its words' (start, end) character offsets."""
        if isinstance(item, dict) and "tokens" in item:
            tokens = item["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
                raise UserError(f"input {number}: 'tokens' must be a list of non-empty strings")
            text, words, start = " ".join(tokens), [], 0
            for token in tokens:
                words.append((start, start + len(token)))
                start += len(token) + 1
            return text, words
        text = _one_text(item, number)
        ((ids, offsets),) = token_offsets.encode_batch(self.model.tokenizer, [text])
        starts = self.model.tokenizer.encoding_of(ids).word_starts
        words: list[tuple[int, int]] = []
        for (start, end), first in zip(offsets, starts, strict=True):
            if first or not words:
                words.append((start, end))
            else:
                words[-1] = (words[-1][0], end)
        return text, words

    def _squad(self, items: list[Item]) -> list[dict[str, Any]]:
        examples = []
        for number, item in enumerate(items, start=1):
            question, context = _question_and_context(item, number)
            examples.append(squad.SquadExample(str(number), question, context, (), False))
        s = self.settings
        window = {"max_seq_length": self.max_seq_length,
                  "doc_stride": int(s.get("doc_stride", 128)),
                  "max_query_length": int(s.get("max_query_length", 64))}  # fmt: skip
        feats = squad.make_features(examples, self.model.tokenizer, is_training=False, **window)
        module = heads.BertForQuestionAnswering(self.model.config)
        starts, ends = self._run(module, squad.features_to_arrays(feats), 0)
        predictions, _, nbest = squad.decode_predictions(
            examples, feats, starts, ends,
            n_best_size=int(s.get("n_best_size", 20)),
            max_answer_length=int(s.get("max_answer_length", 30)),
            version_2_with_negative=bool(s.get("version_2_with_negative", False)),
            null_score_diff_threshold=float(s.get("null_score_diff_threshold", 0.0)),
        )  # fmt: skip
        results = []
        for example in examples:
            answer, best = predictions[example.qid], nbest[example.qid]
            start = best[0].start if answer and best else -1
            end = start + len(answer) if answer else -1
            score = best[0].score if best else None
            results.append({"answer": answer, "start": start, "end": end, "score": score})
        return results

    def _embed(self, items: list[Item]) -> list[dict[str, Any]]:
        texts = [_one_text(item, number) for number, item in enumerate(items, start=1)]
        vectors = embed.embed(
            self.model, texts, self.max_seq_length, self.batch_size,
            pooling=self.model.pooling or "mean",
            normalize=True if self.model.normalize is None else self.model.normalize,
            pad_to_multiple_of=self.multiple,
        )  # fmt: skip
        return [{"embedding": v.tolist()} for v in vectors]


def _entities(text, words, scores, labels) -> list[dict[str, Any]]:
    """The entities of one text from its words' class probabilities (conlleval's chunks)."""
    ids = scores.argmax(axis=-1)
    tags = [labels[i] for i in ids]
    word_scores = scores[np.arange(len(ids)), ids]
    out = []
    for entity_type, first, end in metrics.get_chunks(tags):
        start, stop = words[first][0], words[end - 1][1]
        out.append({"entity_group": entity_type, "score": float(word_scores[first:end].mean()),
                    "word": text[start:stop], "start": start, "end": stop})  # fmt: skip
    return out


def _one_text(item: Item, number: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str) and "text_pair" not in item:
        return item["text"]
    raise UserError(f"input {number}: expected one text (a line, or JSON with 'text')")


def _texts(items: list[Item]) -> tuple[list[str], list[str] | None]:
    """Every item's first text, and its second where the items are pairs (all or none)."""
    firsts, seconds = [], []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            if not isinstance(item.get("text"), str):
                raise UserError(f"input {number}: a JSON object needs a 'text' string")
            item = (item["text"], item["text_pair"]) if "text_pair" in item else item["text"]
        first, second = (item, None) if isinstance(item, str) else item
        if number > 1 and (second is None) != (not seconds):
            raise UserError(f"input {number}: a {'pair' if second is not None else 'single text'}"
                            " among inputs of the other kind")  # fmt: skip
        firsts.append(first)
        if second is not None:
            seconds.append(str(second))
    return firsts, seconds or None


def _question_and_context(item: Item, number: int) -> tuple[str, str]:
    if isinstance(item, dict) and {"question", "context"} <= set(item):
        return str(item["question"]), str(item["context"])
    if isinstance(item, tuple):
        return item
    raise UserError(f"input {number}: a question and its context (a tab between them, or JSON "
                    "with 'question' and 'context')")  # fmt: skip


def read_items(source: str, file_format: str = "auto") -> list[Item]:
    """The inputs of a file (or "-", standard input): one text a line (a tab between the two
    of a pair), or JSON Lines objects; "auto" reads a ".jsonl" name as JSON Lines."""
    if file_format == "auto":
        file_format = "jsonl" if source.endswith(".jsonl") else "lines"
    if source == "-":
        numbered = enumerate(sys.stdin.read().splitlines(), start=1)
    else:
        numbered = text_files.lines(source)
    items: list[Item] = []
    for number, line in numbered:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if file_format == "jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{source}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{source}:{number}: expected a JSON object")
            items.append(record)
        else:
            fields = line.split("\t")
            if len(fields) > 2:
                raise UserError(f"{source}:{number}: {len(fields)} tab-separated fields; one text "
                                "or two (a pair)")  # fmt: skip
            items.append(fields[0] if len(fields) == 1 else (fields[0], fields[1]))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = console.ArgumentParser(
        prog="python -m bert.predict", description="Predictions of a workdir, as JSON Lines."
    )
    parser.add_argument("workdir", help="a training workdir of ours (fine-tuned, or any encoder)")
    parser.add_argument("--input", required=True, help="a file of inputs, or - (standard input)")
    parser.add_argument("--output", default="-", help="the JSON Lines file to write; - : stdout")
    parser.add_argument("--format", choices=("auto", "lines", "jsonl"), default="auto",
                        help="auto: .jsonl names are JSON Lines, others a text a line")  # fmt: skip
    parser.add_argument("--step", type=int, help="the checkpoint step; default: the newest")
    parser.add_argument("--batch_size", type=int, default=0, help="default: the job's")
    args = parser.parse_args(argv)
    paths.use_fsspec_backend()
    try:
        items = read_items(args.input, args.format)
        results = Predictor(args.workdir, args.step, args.batch_size)(items)
    except UserError as e:
        return console.report(e)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        atomic.write_atomically(args.output, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
