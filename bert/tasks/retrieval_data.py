"""A retrieval evaluation set (queries, a corpus, the relevant documents of each query), and a
reader of the BEIR layout that MTEB and sentence-transformers users know:

* ``corpus.jsonl``: one ``{"_id": ..., "title": ..., "text": ...}`` per line (title optional;
  a document is embedded as ``title + " " + text`` when it has a title, as BEIR does);
* ``queries.jsonl``: one ``{"_id": ..., "text": ...}`` per line;
* ``qrels/*.tsv``: a header line, then ``query-id``, ``corpus-id``, ``score`` tab-separated;
  a score above 0 marks the document relevant.

Only queries named in the qrels with at least one relevant document are evaluated (as
sentence-transformers' ``InformationRetrievalEvaluator`` does).
"""

import csv
import dataclasses
import os

from bert.tasks import table_files
from util import paths
from util.errors import UserError

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
    """Queries against a corpus, with the indices of each query's relevant documents.

    Attributes:
      queries: the query texts.
      query_ids: their ids (unique).
      corpus: the document texts.
      corpus_ids: their ids (unique).
      relevant: per query, the indices into ``corpus`` of its relevant documents (sorted,
        at least one).
    """

    queries: tuple[str, ...]
    query_ids: tuple[str, ...]
    corpus: tuple[str, ...]
    corpus_ids: tuple[str, ...]
    relevant: tuple[tuple[int, ...], ...]


def _jsonl(path: PathLike, fields: tuple[str, ...]) -> dict[str, dict]:
    records: dict[str, dict] = {}
    try:
        for where, record in table_files.json_lines(path):
            if not isinstance(record, dict):
                raise UserError(f"{where}: a JSON object is needed, not {type(record).__name__}")
            for field in fields:
                if not isinstance(record.get(field), str):
                    raise UserError(f"{where}: field {field!r} is missing or not a string")
            if not record["text"].strip() and not str(record.get("title") or "").strip():
                raise UserError(f"{where}: field 'text' is empty")
            if record["_id"] in records:
                raise UserError(f"{where}: id {record['_id']!r} appears twice")
            records[record["_id"]] = record
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 at byte {e.start}") from None
    return records


def _qrels(path: PathLike) -> dict[str, set[str]]:
    relevant: dict[str, set[str]] = {}
    try:
        with paths.open_text(path, "utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(reader, None)  # the header
            for row in reader:
                if row == [] or row == [""]:
                    continue
                where = f"{path}:{reader.line_num}"
                if len(row) < 3:
                    raise UserError(f"{where}: expected query-id, corpus-id, score")
                try:
                    score = float(row[2])
                except ValueError:
                    raise UserError(f"{where}: score {row[2]!r} is not a number") from None
                if score > 0:
                    relevant.setdefault(row[0], set()).add(row[1])
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    return relevant


def read_beir(corpus: PathLike, queries: PathLike, qrels: PathLike) -> RetrievalSet:
    """Reads a BEIR-layout retrieval set (see the module docstring).

    Raises:
      UserError: a missing file or field, a duplicate id, or a qrels line naming a query or
        document that the other files do not hold (file and line named).
    """
    docs = _jsonl(corpus, ("_id", "text"))
    asked = _jsonl(queries, ("_id", "text"))
    relevant = _qrels(qrels)
    corpus_ids = tuple(docs)
    position = {doc_id: i for i, doc_id in enumerate(corpus_ids)}
    query_ids = tuple(q for q in asked if relevant.get(q))
    for qid, doc_ids in relevant.items():
        if qid not in asked:
            raise UserError(f"{qrels}: query {qid!r} is not in {queries}")
        missing = sorted(d for d in doc_ids if d not in position)
        if missing:
            raise UserError(f"{qrels}: query {qid!r}: document {missing[0]!r} is not in {corpus}")
    if not query_ids:
        raise UserError(f"{qrels}: no query has a relevant document")

    def text(record: dict) -> str:
        title = str(record.get("title") or "").strip()
        return f"{title} {record['text']}" if title else record["text"]

    return RetrievalSet(
        queries=tuple(asked[q]["text"] for q in query_ids),
        query_ids=query_ids,
        corpus=tuple(text(docs[d]) for d in corpus_ids),
        corpus_ids=corpus_ids,
        relevant=tuple(tuple(sorted(position[d] for d in relevant[q])) for q in query_ids),
    )
