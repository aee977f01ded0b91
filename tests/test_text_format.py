"""format_text, punctuate and ENABLE_AUTO_PUNCTUATION on timed words (engine/text/format.py)."""

from __future__ import annotations

import pytest

from engine.result import Word
from engine.text.format import TextOptions, format_words, strip_punctuation

WRITTEN = TextOptions()
SPOKEN = TextOptions(written=False)


def timed(text: str) -> list[Word]:
    """One word every 400 ms, 300 ms long, confidence falling by 0.01 a word."""
    return [Word(w, i * 400, i * 400 + 300, round(0.9 - 0.01 * i, 2)) for i, w in enumerate(text.split())]


def text(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


@pytest.mark.parametrize(("spoken", "written"), [
    ("I have seven cats.", "I have 7 cats."),
    ("It cost forty nine dollars.", "It cost $49."),
    ("Twenty five percent of them.", "25% of them."),
    ("about twenty five per cent", "about 25%"),
    ("forty nine dollars and ninety nine cents", "$49.99"),
    ("three point five", "3.5"),
    ("one hundred and twenty three", "123"),
    ("It was nineteen ninety nine.", "It was 1999."),
    ("two thousand and twenty four", "2024"),
    ("Meet at ten thirty a.m. sharp", "Meet at 10:30 a.m. sharp"),
    ("On January fifth,", "On January 5th,"),
    ("the twenty first century", "the 21st century"),
    ("forty-nine", "49"),
    ("twenty five euros", "€25"),
])
def test_spelled_numbers_become_written(spoken, written):
    assert text(format_words(timed(spoken), WRITTEN)) == written


@pytest.mark.parametrize("kept", [
    "First of all, one of them.",  # small ordinals and a pronoun "one" stay words
    "a million people and a hundred cats",  # a lone scale word is not a number
    "It cost $5 million.",
])
def test_words_that_are_not_numbers_are_left_alone(kept):
    assert text(format_words(timed(kept), WRITTEN)) == kept


@pytest.mark.parametrize(("spoken", "written"), [
    ("zero three five one.", "0351."),  # text2num alone: "03 5 1."
    ("My number is five five five one two three four.", "My number is 5551234."),
    ("seven eight years old", "7 8 years old"),  # two digits: more likely a range than an identifier
    ("call one two, three four five", "call 1 2, 345"),  # a mark ends a run
    ("twenty five three", "25 3"),  # only digits said one by one
])
def test_digits_said_one_by_one_are_one_identifier(spoken, written):
    assert text(format_words(timed(spoken), WRITTEN)) == written


def test_a_pause_ends_a_run_of_digits():
    words = timed("one two three four")
    words[2:] = [Word(w.text, w.start_ms + 2000, w.end_ms + 2000, w.confidence) for w in words[2:]]
    assert text(format_words(words, WRITTEN)) == "1 2 3 4"


def test_punctuation_separates_spelled_numbers():
    assert text(format_words(timed("twenty, five"), WRITTEN)) == "20, 5"


@pytest.mark.parametrize(("written", "spoken"), [
    ("It cost $49.", "it cost forty nine dollars."),
    ("$49.99", "forty nine dollars and ninety nine cents"),
    ("$1", "one dollar"),
    ("25%", "twenty five percent"),
    ("At 10:30 and 9:05", "at ten thirty and nine oh five"),
    ("the 21st", "the twenty first"),
    ("in 1999", "in nineteen ninety nine"),
    ("the 1990s", "the nineteen nineties"),
    ("1,000 people", "one thousand people"),
    ("3.5", "three point five"),
    ("-5 degrees", "minus five degrees"),
    ("It cost $5 million.", "it cost five million dollars."),
    ("COVID-19", "covid nineteen"),
    ("Paris, France.", "paris, france."),
    ("forty-nine dollars", "forty nine dollars"),
    ("nineteen ninety-nine", "nineteen ninety nine"),
])
def test_spoken_form_expands_digits_and_lower_cases(written, spoken):
    assert text(format_words(timed(written), SPOKEN)) == spoken


def test_merged_words_span_their_parts_with_the_lowest_confidence():
    words = format_words(timed("Pay forty nine dollars now."), WRITTEN)
    assert [(w.text, w.start_ms, w.end_ms, w.confidence) for w in words] == [
        ("Pay", 0, 300, 0.9), ("$49", 400, 1500, 0.87), ("now.", 1600, 1900, 0.86)]


def test_split_words_share_their_span_in_order():
    words = format_words([Word("$49.", 1000, 1600, 0.7)], SPOKEN)
    assert [w.text for w in words] == ["forty", "nine", "dollars."]
    assert [(w.start_ms, w.end_ms) for w in words] == [(1000, 1200), (1200, 1400), (1400, 1600)]
    assert {w.confidence for w in words} == {0.7}


def test_written_and_spoken_forms_round_trip():
    spoken = "we paid forty nine dollars for twenty five percent."
    written = format_words(timed(spoken), WRITTEN)
    assert text(written) == "we paid $49 for 25%."
    assert text(format_words(written, SPOKEN)) == spoken


def test_a_long_pause_separates_spelled_numbers():
    words = [Word("twenty", 0, 300, 0.9), Word("five", 2000, 2300, 0.9)]
    assert text(format_words(words, WRITTEN)) == "20 5"


def test_punctuate_false_keeps_marks_inside_words_and_numbers():
    words = timed("Well, it's $3.50 at 10:30 a.m., isn't it? -5 (mid-term) \u201cyes\u201d")
    assert text(format_words(words, TextOptions(punctuation=False))) == (
        "Well it's $3.50 at 10:30 am isn't it -5 mid-term yes")


def test_auto_punctuation_off_means_no_marks_and_no_capitals():
    words = format_words(timed("Hello, Mr. Smith. Seven dollars!"), TextOptions(punctuation=False, casing=False))
    assert text(words) == "hello mr smith $7"


def test_words_of_only_punctuation_are_dropped():
    assert format_words([Word("...", 0, 100, 0.5), Word("Yes.", 100, 400, 0.9)], TextOptions(punctuation=False)) \
        == [Word("Yes", 100, 400, 0.9)]


@pytest.mark.parametrize(("raw", "stripped"), [
    ("don't", "don't"), ("3.5", "3.5"), ("10:30", "10:30"), ("1,000,", "1,000"), ("well-known.", "well-known"),
    ("\u00bfqu\u00e9?", "qu\u00e9"), ("25%.", "25%"), ("a.m.", "am"),
])
def test_strip_punctuation(raw, stripped):
    assert strip_punctuation(raw) == stripped


@pytest.mark.parametrize(("options", "expected"), [
    (TextOptions(), "I paid $49, 25% of it, at 10:30 a.m. on the 21st."),
    (TextOptions(written=False), "i paid forty nine dollars, twenty five percent of it, at ten thirty a.m. on the "
                                 "twenty first."),
    (TextOptions(punctuation=False), "I paid $49 25% of it at 10:30 am on the 21st"),
    (TextOptions(punctuation=False, casing=False), "i paid $49 25% of it at 10:30 am on the 21st"),
])
def test_the_example_in_docs_api(options, expected):
    spoken = "I paid forty nine dollars, 25% of it, at ten thirty a.m. on the 21st."
    assert text(format_words(timed(spoken), options)) == expected
