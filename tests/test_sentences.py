"""Cutting a streamed reply into sentences: each one as soon as it ends, nothing lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dialog.sentences import MAX_SENTENCE, SentenceSplitter, sentences


def split(pieces: list[str]) -> list[str]:
    splitter = SentenceSplitter()
    out = [sentence for piece in pieces for sentence in splitter.feed(piece)]
    return out + splitter.flush()


def test_a_sentence_comes_out_as_soon_as_its_end_arrives():
    splitter = SentenceSplitter()
    assert splitter.feed("Hello the") == []
    assert splitter.feed("re. How") == ["Hello there."]
    assert splitter.feed(" are you?\n") == ["How are you?"]
    assert splitter.flush() == []


def test_numbers_and_abbreviated_decimals_are_not_cut():
    assert split(["It costs 3.50 today. ", "Bye"]) == ["It costs 3.50 today.", "Bye"]


def test_quotes_and_brackets_stay_with_their_sentence():
    assert split(['He said "yes." Then (he left.) Done']) == ['He said "yes."', "Then (he left.)", "Done"]


def test_a_run_on_sentence_is_cut_at_a_comma_or_space():
    words = ("word, " * 60).strip()
    out = split([words])
    assert all(len(sentence) <= MAX_SENTENCE for sentence in out)
    assert " ".join(out) == words


@given(st.lists(st.text(alphabet="ab .,!?\n", max_size=30), max_size=20))
def test_no_character_but_white_space_is_lost_or_moved(pieces):
    text = "".join(pieces)
    assert "".join(split(pieces)).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


async def test_the_async_form_yields_the_same_sentences():
    async def pieces():
        for piece in ["One. Tw", "o! Three"]:
            yield piece

    assert [s async for s in sentences(pieces())] == ["One.", "Two!", "Three"]
