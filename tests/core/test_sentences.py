"""kb/text/sentences.py: passages split where a reader would split them."""

from kb.text.sentences import (
    LIST_LEAD,
    ONLY_LIST_MARK,
    SENTENCE_BREAK,
    SENTENCE_END_MARK,
    STREAM_SENTENCE_END,
)


def _split(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_BREAK.split(text) if s.strip()]


def test_chinese_passage_splits_at_each_end_mark():
    text = "报销须在30天内提交。逾期怎么办？需部门经理审批；特殊情况另议！\n附件见下"
    assert _split(text) == ["报销须在30天内提交。", "逾期怎么办？", "需部门经理审批；", "特殊情况另议！", "附件见下"]


def test_english_passage_keeps_decimals_and_dotted_names_whole():
    text = "Version 3.5 uses json.dumps for output. Is it fast? Yes!\nSee the notes"
    assert _split(text) == ["Version 3.5 uses json.dumps for output.", "Is it fast?", "Yes!", "See the notes"]


def test_chunker_keeps_closing_quotes_with_their_sentence():
    text = "他说：“明天见。”然后走了。"
    ends = [m.end() for m in SENTENCE_END_MARK.finditer(text)]
    assert [text[:ends[0]], text[ends[0]:ends[1]]] == ["他说：“明天见。”", "然后走了。"]


def test_a_stream_waits_for_the_space_after_a_full_stop_only():
    assert STREAM_SENTENCE_END.search("It costs 3.5") is None
    assert STREAM_SENTENCE_END.search("Really?") is not None


def test_list_marks():
    assert ONLY_LIST_MARK.match("1.") and ONLY_LIST_MARK.match("-") and not ONLY_LIST_MARK.match("1.5")
    assert LIST_LEAD.sub("", "2. Keep receipts.") == "Keep receipts."
    assert LIST_LEAD.sub("", "2.5 percent") == "2.5 percent"
