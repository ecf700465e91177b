"""The loop guard on the loops small models really produce: a sentence again and again, a phrase without
any sentence end, in English and Chinese; and on answers that must pass untouched."""

from __future__ import annotations

import pytest

from kb.answer.loop_guard import LoopGuard


def run(pieces: list[str]) -> tuple[str, LoopGuard, int]:
    """Feed the pieces like a stream; return the text shown, the guard, and pieces consumed."""
    guard = LoopGuard()
    shown = []
    used = 0
    for piece in pieces:
        used += 1
        shown.append(guard.feed(piece))
        if guard.stopped:
            break
    shown.append(guard.flush())
    return "".join(shown), guard, used


def tokens(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_a_repeated_sentence_is_shown_once_and_the_stream_stops():
    first = "Hourly snapshots are kept for 48 hours [1]. "
    loop = "The IT team ensures that the file server is always available for remote staff [2]. "
    shown, guard, used = run(tokens(first + loop * 13))
    assert shown == first + loop
    assert guard.stopped
    assert used < len(tokens(first + loop * 3))  # stopped during the second copy, not at the token limit


def test_the_same_sentence_with_another_marker_is_still_a_repeat():
    shown, guard, _ = run(tokens("Snapshots are kept for two days [1]. Snapshots are kept for two days [2]. More."))
    assert shown == "Snapshots are kept for two days [1]. "
    assert guard.stopped


def test_chinese_phrase_loop_from_the_readme_example():
    text = "在这个问题中，出差住宿标准见资料。" + "资料中有多少出差！" * 20
    shown, guard, _ = run(tokens(text, 2))
    assert shown == "在这个问题中，出差住宿标准见资料。资料中有多少出差！"
    assert guard.stopped and guard.repeat.startswith("资料中有多少出差")


def test_a_loop_without_sentence_ends_is_cut_before_it_is_shown():
    text = "The answer is that snapshots " + "and the backups and the snapshots " * 10
    shown, guard, _ = run(tokens(text))
    assert guard.stopped
    assert text.startswith(shown) and shown.count("and the backups") == 1  # the start, then no repeat
    chinese = "一线城市住宿标准为每晚" + "六百元人民币以内报销" * 12
    shown, guard, _ = run(tokens(chinese, 2))
    assert guard.stopped
    assert chinese.startswith(shown) and shown.count("六百元人民币以内报销") <= 2 and "每晚" in shown


def test_text_streams_without_waiting_for_the_sentence_end():
    words = " ".join(f"word{i}" for i in range(200))  # no repeat, no sentence end
    guard = LoopGuard()
    shown = "".join(guard.feed(p) for p in tokens(words))
    assert len(words) - len(shown) < 60  # only the last run's worth is held back
    assert shown + guard.flush() == words and not guard.stopped


def test_a_sentence_that_begins_like_an_earlier_one_is_held_until_it_differs():
    guard = LoopGuard()
    shown = guard.feed("Snapshots are kept for two days [1]. Next. ") + guard.feed("Snapshots are kept")
    assert shown == "Snapshots are kept for two days [1]. Next. "  # the new sentence could be the first again
    shown += guard.feed(" for two weeks off-site.")
    assert "Next. Snapshots are kept for two weeks off-s" in shown  # no longer: streamed


@pytest.mark.parametrize("answer", [
    "Yes [1]. Yes [2]. The limit is 600 yuan per night [1].",  # short sentences may repeat
    "| City | Limit |\n|---|---|\n| Beijing | 600 |\n| Shanghai | 600 |\n",  # table rules and cells
    "1. Open the settings.\n2. Open the network page.\n3. Open the VPN tab.\n",  # similar, not equal
    "一线城市每晚最多报销600元【1】。二线城市每晚最多报销450元【1】。",
    "Snapshots are kept for 48 hours [1].",
])
def test_answers_without_loops_pass_untouched(answer):
    shown, guard, _ = run(tokens(answer, 2))
    assert shown == answer
    assert not guard.stopped


def test_a_marker_after_the_end_mark_stays_with_its_sentence():
    shown, guard, _ = run(tokens("Kept for two days. [1] Kept for two days. [2] Done."))
    assert shown == "Kept for two days. [1]"
    assert guard.stopped


def test_a_list_number_is_not_shown_before_a_repeated_item():
    shown, guard, _ = run(tokens("1. Snapshots are kept for two days.\n2. Snapshots are kept for two days.\n3."))
    assert shown == "1. Snapshots are kept for two days.\n" and guard.stopped
    shown, guard, _ = run(["1. About the VPN.", "\n", "2.", " About the", " VPN.", "\n3."])
    assert shown == "1. About the VPN.\n" and guard.stopped
