"""Question/passage pairs from SQuAD JSON, and a split by article for retrieval.

The questions come from :func:`bert.tasks.squad.read_squad` (every question, all its answers;
SQuAD v2.0's unanswerable questions are left out: they have no passage). The passage is either
the whole paragraph or the sentence holding the first answer, found with the corpus reader's
sentence splitter (:func:`input_pipeline.sentence_splitter.split_sentences`); an answer that
the splitter cuts in two gets every sentence it touches, as they stand in the paragraph. An
answer whose text is not at its ``answer_start`` is looked up in the paragraph; a question
whose answer text is nowhere in it is skipped and counted (``PairSet.skipped``).

:func:`split_by_article` trains on some articles and keeps the last ``held_out_articles``
(in file order) for retrieval: their questions are the queries, their paragraphs the corpus,
and each question's own paragraph its one relevant document.
"""

import dataclasses
import logging
import os

from bert.tasks import squad
from bert.tasks.pair_set import PairSet
from bert.tasks.retrieval_data import RetrievalSet
from input_pipeline import sentence_splitter
from util.errors import UserError

PathLike = str | os.PathLike
PASSAGES = ("paragraph", "sentence")


@dataclasses.dataclass(frozen=True)
class _Question:
    article: int  # index of the article (a run of examples with one title)
    paragraph: str
    question: str
    qid: str
    passage: str


def answer_sentence(context: str, answer: squad.Answer) -> str | None:
    """The sentence(s) of `context` holding `answer`; None when its text is not in `context`."""
    start = answer.start
    if context[start : start + len(answer.text)] != answer.text:
        start = context.find(answer.text)
        if start < 0 or not answer.text:
            return None
    end = start + len(answer.text)
    first = last = None
    cursor = 0
    for sentence in sentence_splitter.split_sentences(context):
        begin = context.index(sentence, cursor)
        cursor = begin + len(sentence)
        if begin < end and start < cursor:
            first = begin if first is None else first
            last = cursor
    return None if first is None else context[first:last]


def _questions(path: PathLike, passage: str) -> tuple[list[_Question], int]:
    if passage not in PASSAGES:
        raise UserError(f"SQuAD passage {passage!r} is not one of {', '.join(PASSAGES)}")
    examples = squad.read_squad(path, is_training=False).examples
    out, skipped, article, title = [], 0, -1, None
    for example in examples:
        if example.title != title or article < 0:
            article, title = article + 1, example.title
        if example.is_impossible or not example.answers:
            continue
        text = example.context
        if passage == "sentence":
            text = answer_sentence(example.context, example.answers[0])
            if text is None:
                skipped += 1
                continue
        out.append(_Question(article, example.context, example.question, example.qid, text))
    if skipped:
        logging.warning("%s: %d question(s) skipped, answer text not in the paragraph", path,
                        skipped)  # fmt: skip
    return out, skipped


def _pair_set(questions: list[_Question], skipped: int) -> PairSet:
    return PairSet(tuple(q.question for q in questions), tuple(q.passage for q in questions),
                   skipped=skipped)  # fmt: skip


def read_squad_pairs(path: PathLike, passage: str = "paragraph") -> PairSet:
    """(question, passage) for every answerable question of a SQuAD file, in file order.

    Args:
      passage: "paragraph" (the whole context) or "sentence" (the sentence holding the answer).
    """
    return _pair_set(*_questions(path, passage))


def split_by_article(
    path: PathLike, held_out_articles: int, passage: str = "paragraph"
) -> tuple[PairSet, RetrievalSet]:
    """Training pairs from the first articles, a retrieval set from the last ones.

    Articles are runs of questions with one title (SQuAD's titles are unique).

    Args:
      held_out_articles: how many articles, counted from the end of the file, to hold out
        (all of them: the whole file is the retrieval set, no training pairs).
      passage: the training pairs' passage ("paragraph" or "sentence"); the retrieval
        corpus is always the held-out articles' paragraphs.

    Returns:
      The training pairs, and the retrieval set: queries the held-out questions (ids the
      SQuAD question ids), corpus the held-out paragraphs that have answerable questions
      (ids "ARTICLE/PARAGRAPH", both counted from 0; each distinct paragraph once), each
      query's own paragraph relevant.

    Raises:
      UserError: held_out_articles not between 1 and the number of articles.
    """
    questions, skipped = _questions(path, passage)
    articles = 1 + max((q.article for q in questions), default=-1)
    if not 0 < held_out_articles <= articles:
        raise UserError(f"{path}: held_out_articles={held_out_articles} must be between 1 "
                        f"and {articles} (the articles with answerable questions; all of "
                        "them: no training pairs)")  # fmt: skip
    first_held = articles - held_out_articles
    train = [q for q in questions if q.article < first_held]
    held = [q for q in questions if q.article >= first_held]
    corpus: dict[tuple[int, str], int] = {}
    corpus_ids, queries, relevant, counts = [], [], [], {}
    for q in held:
        key = (q.article, q.paragraph)
        if key not in corpus:
            corpus[key] = len(corpus)
            number = counts[q.article] = counts.get(q.article, -1) + 1
            corpus_ids.append(f"{q.article}/{number}")
        queries.append(q)
        relevant.append((corpus[key],))
    retrieval = RetrievalSet(
        queries=tuple(q.question for q in queries),
        query_ids=tuple(q.qid for q in queries),
        corpus=tuple(paragraph for _, paragraph in corpus),
        corpus_ids=tuple(corpus_ids),
        relevant=tuple(relevant),
    )
    return _pair_set(train, skipped), retrieval
