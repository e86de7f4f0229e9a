"""A rule-based sentence splitter, :func:`split_sentences`, with English abbreviation lists and
the stops of Chinese and Japanese.

The corpus readers (`corpora`) cut paragraphs with it, and so do `prepare`'s workers. It is a
regular expression that finds candidate stops in linear time, and word lists (titles,
abbreviations, common sentence openers) that decide the ambiguous ones. Chinese and Japanese
text has no spaces between sentences: there a stop ends a sentence by itself (see
`split_sentences`).
"""

import heapq
import re
from collections.abc import Iterator


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Abbreviations after which a full stop never ends a sentence (compared in lower case).
_ABBREVIATIONS = _word_set(
    "mr mrs ms messrs mme mlle dr prof rev fr hon gen col maj capt cpt lt sgt cmdr adm gov sen rep "
    "pres supt insp st mt ft vs v cf viz approx ca e.g i.e a.k.a"
)
# Abbreviations that do not end a sentence when a number follows ("No. 5", "Jan. 1", "p. 12").
_NUMBER_ABBREVIATIONS = _word_set(
    "no nos vol vols p pp fig figs eq ch art sec op jan feb mar apr jun jul aug sep sept oct nov "
    "dec c"
)
# Abbreviations that end a sentence only before a word from _SENTENCE_STARTERS.
_WEAK_ABBREVIATIONS = _word_set("jr sr inc ltd co corp bros plc al")
# Words that usually open a sentence; they decide the ambiguous cases (initials, "U.S.", "Inc.").
_SENTENCE_STARTERS = _word_set(
    "a an the he she it its they we i you his her their our my this that these those there "
    "in on at as by for from with after before during since while when where if although "
    "though but and or so yet however thus then also today later despite because unlike "
    "according following under over some many most several both each all one another other "
    "such no what who why how"
)
_TERMINATORS = ".?!\u2026"  # ... plus the ellipsis character
_CLOSERS = "\"'\u201d\u2019\u00bb)]}"  # closing quotes and brackets that may follow a stop
_OPENERS = "\"'\u201c\u2018\u00ab([{"
# A stop run (not entered midway, never backtracked into, so linear time), closers, spaces.
_CANDIDATE = re.compile(
    rf"(?<![{_TERMINATORS}])[{_TERMINATORS}]++[{re.escape(_CLOSERS)}]*+\s++"
    rf"(?=[{re.escape(_OPENERS)}]*+(\S))"
)
# Chinese and Japanese: ideographs, kana, and the full-width forms (letters, digits) in their text
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff10-\uff5a"
_CJK_STOPS = "\u3002\uff01\uff1f\uff1b\uff61"  # 。！？；｡ (ideographic and full-width stops)
_CJK_CLOSERS = "\u201d\u2019\u300d\u300f\u3011\u3009\u300b\u3015\uff09\"')"  # ”’」』】〉》〕）
_CJK_OPENERS = "\u201c\u2018\u300c\u300e\u3010\u3008\u300a\u3014\uff08"  # “‘「『【〈《〔（
# A stop of Chinese or Japanese text: an ideographic stop, then any more of them, ellipses and
# closing quotes and brackets ("？？？）；" is one), then any spaces, before more text (not
# Latin punctuation: English text around a quotation goes on); or a run of ellipses or Latin
# stops (its writers often type those) after an ideograph, kana or closing bracket and before
# an ideograph or kana ("(河鼓. lit" does not split).
_CJK_CANDIDATE = re.compile(
    rf"[{_CJK_STOPS}][{_CJK_STOPS}\u2026{re.escape(_CJK_CLOSERS)}]*+\s*+"
    r"(?=[^\s,.;:!?)\]}\"'])"
    rf"|(?<=[{_CJK}{re.escape(_CJK_CLOSERS)}])[.!?\u2026]++[{re.escape(_CJK_CLOSERS)}]*+\s*+"
    rf"(?=[{_CJK}{_CJK_OPENERS}])"
)
_CJK_STOPS_OR_SCRIPT = re.compile(f"[{_CJK}{_CJK_STOPS}]")  # whether to look for them at all
_DOTTED = re.compile(r"(?:[^\W\d_]{1,2}\.)+[^\W\d_]{1,2}")  # U.S, e.g, Ph.D (last dot excluded)


def _is_boundary(text: str, match: re.Match) -> bool:
    """Decides whether the candidate ``match`` (stop, closers, spaces) ends a sentence."""
    following = match.group(1)
    if following.islower():
        return False  # "e.g. the", "approx. five", "Hello! said he"
    stop = match.group(0).rstrip()
    if stop != ".":
        return True  # ? ! ..., or a stop followed by a closing quote or bracket
    start = match.start()
    before = text[max(0, start - 24) : start]
    words = before.split()
    if not words or before[-1].isspace():
        return True
    word = words[-1].lstrip(_OPENERS)
    lower = word.lower()
    if lower in _ABBREVIATIONS:
        return False
    is_initial = len(word) == 1 and word.isalpha() and word.isupper()
    if is_initial or lower in _WEAK_ABBREVIATIONS or _DOTTED.fullmatch(word):
        next_words = text[match.end() : match.end() + 24].split()
        next_word = next_words[0].strip(_OPENERS + _CLOSERS + ",;:") if next_words else ""
        return next_word.lower() in _SENTENCE_STARTERS
    if following.isdigit():
        return lower not in _NUMBER_ABBREVIATIONS
    return True


def _cuts(paragraph: str) -> Iterator[tuple[int, int]]:
    """(end of a sentence, start of the next) at each sentence boundary, in order; streamed
    (a paragraph may be a whole document on one line)."""
    english = (
        (m.start() + len(m.group(0).rstrip()), m.end())
        for m in _CANDIDATE.finditer(paragraph)
        if _is_boundary(paragraph, m)
    )
    if not _CJK_STOPS_OR_SCRIPT.search(paragraph):
        return english
    cjk = ((m.start() + len(m.group(0).rstrip()), m.end())
           for m in _CJK_CANDIDATE.finditer(paragraph))  # fmt: skip
    return heapq.merge(english, cjk)


def split_sentences(paragraph: str) -> list[str]:
    """Cuts a paragraph into sentences with a rule-based splitter.

    A sentence ends at ``.``, ``?``, ``!`` or ``…`` (runs like ``?!`` or ``...`` included),
    with any closing quotes or brackets after it, when whitespace follows and the next word
    does not start with a lower-case letter. A single full stop is further not an end:

    * after a title or a fixed abbreviation (Dr., Mr., St., vs., v., e.g., i.e., approx., ...);
    * before a number, after an abbreviation that precedes numbers (No. 5, Jan. 1, p. 12);
    * after an initial (J. R. R. Tolkien), a dotted acronym (U.S., Ph.D., p.m.) or a suffix
      (Inc., Ltd., Jr., et al.), unless the next word is a common sentence opener (The, He,
      In, ...): "in the U.S. The war" splits, "the U.S. Army" does not.

    Decimals (3.14), versions (v1.2) and stops without a following space never split. Words
    are matched case-insensitively; scripts without letter case always split after a stop.
    The known misses are abbreviations that really end a sentence ("... on Main St. Next")
    and initials or acronyms before a sentence starting with an uncommon word.

    Chinese and Japanese: a sentence ends at ``。``, ``！``, ``？``, ``；`` or ``｡``, with any
    more of them, ellipses and closing quotes or brackets after it (``！！``, ``？”``,
    ``？？？）；``); no space need follow. ``.``, ``!``, ``?`` or ``…`` (runs such as ``……`` or
    ``...``) end one after an ideograph, kana or closing bracket and before an ideograph or
    kana (or an opening quote or bracket). The comma-like ``，``, ``、`` and ``：`` never end one.

    Returns:
      The sentences, stripped of surrounding whitespace; none empty.
    """
    sentences = []
    begin = 0
    for end, start in _cuts(paragraph):
        if end <= begin:
            continue  # the same stop found by both rules
        sentence = paragraph[begin:end].strip()
        if sentence:
            sentences.append(sentence)
        begin = start
    last = paragraph[begin:].strip()
    if last:
        sentences.append(last)
    return sentences
