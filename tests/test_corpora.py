"""Corpus readers: real WikiExtractor counts, formats, bad input, streaming memory, splitting."""

import csv
import gzip
import json
import pathlib
import random
import re
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from input_pipeline import corpora, sentence_splitter, tfds_corpus
from util.errors import UserError

# ---------------------------------------------------------------------------------------------
# Sentence splitting

SPLITS = [
    ("Dr. Smith went home. He slept.", ["Dr. Smith went home.", "He slept."]),
    ("Pi is 3.14 or so. It never ends.", ["Pi is 3.14 or so.", "It never ends."]),
    ("Fruit, e.g. apples, i.e. food. Yes.", ["Fruit, e.g. apples, i.e. food.", "Yes."]),
    ("The U.S. Army grew. It won.", ["The U.S. Army grew.", "It won."]),
    ("He moved to the U.S. The war began.", ["He moved to the U.S.", "The war began."]),
    ("J. R. R. Tolkien wrote it. Bilbo. ", ["J. R. R. Tolkien wrote it.", "Bilbo."]),
    ("George W. Bush spoke. Then he left.", ["George W. Bush spoke.", "Then he left."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ('He said "Stop." and left.', ['He said "Stop." and left.']),
    ("(It was late.) We went home.", ["(It was late.)", "We went home."]),
    ("Really?! Yes! Sure... Fine.", ["Really?!", "Yes!", "Sure...", "Fine."]),
    ("Why? because. Ok!", ["Why? because.", "Ok!"]),
    ("See No. 5 and p. 12. Next one.", ["See No. 5 and p. 12.", "Next one."]),
    ("Born c. 1900 in Jan. 1901 it was.", ["Born c. 1900 in Jan. 1901 it was."]),
    (
        "Smith et al. found it. Smith et al. The end.",
        ["Smith et al. found it.", "Smith et al.", "The end."],
    ),
    (
        "Apple Inc. makes phones. Apple Inc. The firm.",
        ["Apple Inc. makes phones.", "Apple Inc.", "The firm."],
    ),
    ("Texas v. Johnson was decided. It held.", ["Texas v. Johnson was decided.", "It held."]),
    ("Mr. and Mrs. Jones met St. Peter.", ["Mr. and Mrs. Jones met St. Peter."]),
    ("Version 1.2.3 shipped.Then v2. Done.", ["Version 1.2.3 shipped.Then v2.", "Done."]),
    ("It rose 5%. 2010 was worse.", ["It rose 5%.", "2010 was worse."]),
    ("«Oui.» Il part.", ["«Oui.»", "Il part."]),
    ("Он пришёл. Она ушла.", ["Он пришёл.", "Она ушла."]),
    ("At 5 p.m. we ate. At 6 p.m. The end.", ["At 5 p.m. we ate.", "At 6 p.m.", "The end."]),
    ("  One.   Two.  ", ["One.", "Two."]),
    (
        "我住的是主楼。价格很值了！早餐呢？对。",
        ["我住的是主楼。", "价格很值了！", "早餐呢？", "对。"],
    ),
    ("他说：“好的。”然后走了。", ["他说：“好的。”", "然后走了。"]),
    ("麻烦.建议用别的路线. 房间简单!", ["麻烦.", "建议用别的路线.", "房间简单!"]),
    ("真好……下次再来！！", ["真好……", "下次再来！！"]),
    ("算什么？？？）；下次不来", ["算什么？？？）；", "下次不来"]),
    ("东京は大きい。大阪も好きです。", ["东京は大きい。", "大阪も好きです。"]),
    ("价格是100元。200元的更好。", ["价格是100元。", "200元的更好。"]),
    (
        'Known as "hegu" (河鼓; lit. drum). It shines.',
        ['Known as "hegu" (河鼓; lit. drum).', "It shines."],
    ),
    (
        'Ask: 你的车是红色的？ "nǐ de chē" it means.',
        ['Ask: 你的车是红色的？ "nǐ de chē" it means.'],
    ),
    ("", []),
    ("No stop at the end", ["No stop at the end"]),
]


@pytest.mark.parametrize(("text", "expected"), SPLITS)
def test_split_sentences(text, expected):
    assert sentence_splitter.split_sentences(text) == expected


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------
# Real data


def test_wikiextractor_reads_every_document(shared_data):
    stats = corpora.CorpusStats()
    glob = str(shared_data / "wikipedia" / "AA" / "wiki_*")
    documents = 0
    first = None
    for document in corpora.read_corpus(glob, "wikiextractor", stats=stats):
        first = first or document
        documents += 1
        assert document and all(sentence.strip() == sentence != "" for sentence in document)
    # 5,247 <doc> elements; two ("Cogency", "Freestyle") hold only their title: counted skips.
    assert documents + stats.skipped_documents == 5247
    assert (documents, stats.skipped_documents) == (5245, 2)
    assert stats.files == 80 and stats.skipped_files == 0 and stats.documents == documents
    words = stats.sentences * 20  # order of magnitude check against the README's 13.0M words
    assert 8_000_000 < words < 20_000_000
    assert first[0].startswith("Anarchism is a political philosophy that advocates")  # no title
    assert first[1] == "Anarchism holds the state to be undesirable, unnecessary, or harmful."


def test_splitter_keeps_every_character_on_real_text(shared_data):
    path = shared_data / "wikipedia" / "AA" / "wiki_03"
    paragraphs = [p for d in corpora.read_wikiextractor(path, sentence_split=False) for p in d]
    sentences = 0
    for paragraph in paragraphs:
        pieces = sentence_splitter.split_sentences(paragraph)
        assert _squeeze(" ".join(pieces)) == _squeeze(paragraph)
        sentences += len(pieces)
    words = sum(len(p.split()) for p in paragraphs)
    assert 12 < words / sentences < 35  # English Wikipedia averages about 20 words a sentence


# Where sentences end in a held-back sample of ChnSentiCorp's reviews (rows drawn by
# random.Random(2027).sample(range(7766), 14)), written by reading each review: the review's
# punctuation marks (CJK_MARKS) are numbered from 0, and the numbers are those of the marks that
# end a sentence with another after it.
CJK_MARKS = "。！？；.!?…，,：:;"
CHNSENTICORP_CUTS = {
    111: [5, 9, 12],
    651: [2, 4, 8, 11, 12, 13, 17],
    887: [0, 1, 3],
    1503: [],
    2641: [0, 2, 3, 5],
    3266: [4, 11],
    3326: [1, 4, 5, 8, 9, 11, 14, 16, 20, 23],
    3801: [2, 12, 16],
    5125: [3, 6, 9],
    5367: [],
    6492: [0, 3, 9, 11, 16],
    6601: [1, 9, 15, 17, 20, 23],
    7408: [1, 4, 6, 7, 10, 15, 18, 20, 22, 24, 26, 27, 29, 37, 40, 42, 44, 48, 52, 57, 65, 68],
    7594: [12, 13, 15, 21, 24, 28],
}


def _cut_marks(review: str, sentences: list[str]) -> list[int]:
    """The numbers of the marks ending each sentence but the last (see CHNSENTICORP_CUTS)."""
    marks = [i for i, ch in enumerate(review) if ch in CJK_MARKS]
    cuts, position = [], 0
    for sentence in sentences[:-1]:
        position = review.index(sentence, position) + len(sentence)
        cuts.append(max(n for n, i in enumerate(marks) if i < position))
    return cuts


def test_chinese_reviews_are_cut_where_their_sentences_end(shared_data):
    path = shared_data / "chinese" / "ChnSentiCorp_htl_all.csv"
    with open(path, encoding="utf-8", newline="") as f:
        reviews = [row["review"] for row in csv.DictReader(f)]
    assert sorted(random.Random(2027).sample(range(len(reviews)), 14)) == list(CHNSENTICORP_CUTS)
    for row, expected in CHNSENTICORP_CUTS.items():
        sentences = sentence_splitter.split_sentences(reviews[row])
        assert re.sub(r"\s+", "", "".join(sentences)) == re.sub(r"\s+", "", reviews[row])
        assert _cut_marks(reviews[row], sentences) == expected, (row, sentences)


# ---------------------------------------------------------------------------------------------
# Formats


def test_text_format(tmp_path):
    path = tmp_path / "bert.txt"
    path.write_bytes(
        b"\xef\xbb\xbfFirst sentence. Still one line.\r\nSecond line.\n\n\n  \n"
        b"Doc two, only line.\n\n"
    )
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(str(path), "text", stats=stats))
    assert documents == [
        ["First sentence. Still one line.", "Second line."],
        ["Doc two, only line."],
    ]
    assert (stats.documents, stats.sentences) == (2, 3)


@pytest.mark.parametrize("format", ["text", "paragraphs"])
def test_markup_read_as_plain_text_names_the_format_to_use(shared_data, tmp_path, format):
    wiki = shared_data / "wikipedia" / "AA" / "wiki_00"
    with pytest.raises(
        UserError,
        match=rf"^{wiki} is WikiExtractor output \(its first line is "
        r"'<doc id=.*\), not plain text: read it with format 'wikiextractor'$",
    ):
        list(corpora.read_corpus(str(wiki), format))
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('\n{"text": "One. Two."}\n{"text": "Three."}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"docs.jsonl is JSON Lines .* format 'jsonl'"):
        list(corpora.read_corpus(str(jsonl), format))
    parquet = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"text": ["One. Two."]}), parquet)
    for wrong in (format, "jsonl"):  # a binary file, named for what it is, not invalid UTF-8
        with pytest.raises(UserError, match=r"part-0.parquet is a Parquet file, .* 'parquet'$"):
            list(corpora.read_corpus(str(parquet), wrong))
    # Text that merely mentions markup or braces past its first line is text.
    text = tmp_path / "text.txt"
    text.write_text('{braces} open the file.\n<doc id="1"> is markup.\n', encoding="utf-8")
    assert list(corpora.read_corpus(str(text), "text")) == [
        ["{braces} open the file.", '<doc id="1"> is markup.']
    ]


def test_paragraphs_format(tmp_path):
    path = tmp_path / "paras.txt"
    path.write_text("One. Two? Three!\nFour.\n\nFive. Six.", encoding="utf-8")
    documents = list(corpora.read_corpus([path], "paragraphs"))
    assert documents == [["One.", "Two?", "Three!", "Four."], ["Five.", "Six."]]
    whole = list(corpora.read_paragraphs(path, sentence_split=False))
    assert whole == [["One. Two? Three!", "Four."], ["Five. Six."]]


def test_jsonl_format(tmp_path):
    path = tmp_path / "docs.jsonl"
    records = [
        {"body": "Para one. Second sentence.\n\nPara two.", "id": 1},
        {"body": "   ", "id": 2},
        {"body": "Only one.", "id": 3},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(str(path), "jsonl", text_field="body", stats=stats))
    assert documents == [["Para one.", "Second sentence.", "Para two."], ["Only one."]]
    assert stats.skipped_documents == 1
    with pytest.raises(
        ValueError, match=r"docs\.jsonl:1: no field 'text' \(found \['body', 'id'\]\)"
    ):
        list(corpora.read_corpus(str(path), "jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine."}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        list(corpora.read_corpus(str(bad), "jsonl"))
    bad.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: field 'text' is a int"):
        list(corpora.read_corpus(str(bad), "jsonl"))


WIKI = """<doc id="1" url="u1" title="Q&amp;A">
Q&amp;A

Q&A is a format. It has questions.
Second paragraph.
</doc>
<doc id="2" url="u2" title="Empty">
Empty

</doc>
<doc id="3" url="u3" title="Title">
Not the title line. Kept.
</doc>
"""


def test_wikiextractor_format(tmp_path):
    path = tmp_path / "wiki_00"
    path.write_text(WIKI, encoding="utf-8")
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(str(path), "wikiextractor", stats=stats))
    assert documents == [
        ["Q&A is a format.", "It has questions.", "Second paragraph."],
        ["Not the title line.", "Kept."],
    ]
    assert stats.skipped_documents == 1
    cases = {
        "<doc id='1'>\nT\ntext\n": r"wiki_bad: ends inside the document opened at line 1",
        "<doc id='1'>\nT\n<doc id='2'>\n</doc>\n": r"wiki_bad:3: <doc> inside the document",
        "stray text\n": r"wiki_bad:1: text outside <doc>",
        "</doc>\n": r"wiki_bad:1: </doc> without an open <doc>",
    }
    bad = tmp_path / "wiki_bad"
    for text, message in cases.items():
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            list(corpora.read_corpus(str(bad), "wikiextractor"))


def test_compressed_files_read_like_plain_ones(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_text(WIKI, encoding="utf-8")
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(WIKI)
    first = list(corpora.read_corpus(str(plain), "wikiextractor"))
    assert list(corpora.read_corpus(str(tmp_path / "b.txt.gz"), "wikiextractor")) == first


# ---------------------------------------------------------------------------------------------
# Bad input


def test_glob_matching_nothing_is_named(tmp_path):
    pattern = str(tmp_path / "nothing-*.txt")
    with pytest.raises(UserError, match=re.escape(pattern)):
        corpora.read_corpus(pattern, "text")  # raised at the call, before iteration
    with pytest.raises(ValueError, match="unknown corpus format 'xml'"):
        corpora.read_corpus(pattern, "xml")


def test_empty_and_blank_files_are_counted_skips(tmp_path):
    (tmp_path / "0-empty.txt").write_bytes(b"")
    (tmp_path / "1-blank.txt").write_text("\n  \n\t\n\n")
    (tmp_path / "2-real.txt").write_text("A sentence.\n")
    stats = corpora.CorpusStats()
    documents = list(corpora.read_corpus(str(tmp_path / "*.txt"), "paragraphs", stats=stats))
    assert documents == [["A sentence."]]
    assert (stats.files, stats.skipped_files, stats.documents) == (3, 2, 1)


def _with_bad_bytes(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"First line ok.\n" + b"caf\xe9 au lait.\n" + b"Last line.\n")
    return path  # the bad byte is at offset 15 + 3 = 18, on line 2


def test_invalid_utf8_names_file_and_byte_offset(tmp_path):
    path = _with_bad_bytes(tmp_path)
    documents = corpora.read_corpus(str(path), "text")
    with pytest.raises(ValueError, match=r"latin1\.txt: invalid UTF-8 at byte offset 18 \(line 2"):
        list(documents)


def test_invalid_utf8_replace_and_skip_are_counted(tmp_path):
    path = _with_bad_bytes(tmp_path)
    stats = corpora.CorpusStats()
    replaced = list(corpora.read_corpus(str(path), "text", errors="replace", stats=stats))
    assert replaced == [["First line ok.", "caf\ufffd au lait.", "Last line."]]
    assert (stats.replaced_lines, stats.skipped_lines) == (1, 0)
    stats = corpora.CorpusStats()
    skipped = list(corpora.read_corpus(str(path), "text", errors="skip", stats=stats))
    assert skipped == [["First line ok.", "Last line."]]
    assert (stats.replaced_lines, stats.skipped_lines) == (0, 1)


def test_reading_is_lazy(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"Doc one.\n\n" + b"Filler line.\n" * 1000 + b"\xff\n")
    documents = corpora.read_corpus(str(path), "text")
    assert next(documents) == ["Doc one."]  # yielded before the bad byte further on is read
    with pytest.raises(ValueError, match="byte offset 13010"):
        next(documents)


def _peak_bytes(documents) -> tuple[int, int, int]:
    """(documents, characters, peak traced allocation) while consuming ``documents``."""
    tracemalloc.start()
    try:
        count = chars = 0
        for document in documents:
            count += 1
            chars += sum(len(s) for s in document)
        return count, chars, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.full
def test_memory_is_bounded_by_the_largest_document(tmp_path):
    sentence = "The quick brown fox met Dr. Smith in the U.S. on a 3.5 km walk. "
    repeats = 10_000_000 // len(sentence)
    huge_line = sentence * repeats  # one 10 MB paragraph
    path = tmp_path / "huge.txt"
    path.write_text(f"Small doc.\n\n{huge_line}\n\nLast doc.\n", encoding="utf-8")
    stats = corpora.CorpusStats()
    count, chars, peak = _peak_bytes(corpora.read_corpus(str(path), "paragraphs", stats=stats))
    assert (count, stats.sentences) == (3, repeats + 2)
    assert chars == len("Small doc.") + len(huge_line) - repeats + len("Last doc.")  # spaces cut
    assert peak < 6 * len(huge_line)  # a few copies of that one document (linear in it)
    many = tmp_path / "many.txt"
    many.write_text("A first sentence. And a second one!\n\n" * 50_000, encoding="utf-8")
    count, _, peak = _peak_bytes(corpora.read_corpus(str(many), "paragraphs"))
    assert count == 50_000
    assert peak < 100_000  # 1.9 MB of text, read one document at a time


def test_tfds_offline_error_says_how_to_use_local_files(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    for name in ["no_such_dataset_xyz", "imdb_reviews"]:  # unknown; known but not prepared
        with pytest.raises(RuntimeError, match=rf"TFDS could not load '{name}'") as info:
            tfds_corpus.read_tfds(name, "train", data_dir=tmp_path)
        assert "read_corpus('path/*.txt', format)" in str(info.value)
        assert "data_dir" in str(info.value)
