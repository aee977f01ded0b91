"""The transcript views in engine/text/exports.py, on hand-built transcripts (no model, no daemon).

Shapes are checked against the official assemblyai and openai SDK models, so the HTTP layer can
hand these dicts out as they are.
"""

from __future__ import annotations

import math
import re

import pytest

from engine.text import exports
from engine.text.compression import compression_ratio

WORD_MS, GAP_MS = 300, 100


def spoken(text: str, start: int = 0, channel: str | None = None) -> list[dict]:
    """Words of `text` as the server stores them: 300 ms each, 100 ms apart, varied confidence."""
    words = []
    for index, token in enumerate(text.split()):
        begin = start + index * (WORD_MS + GAP_MS)
        word = {"text": token, "start": begin, "end": begin + WORD_MS, "confidence": 0.6 + (index % 4) / 10}
        if channel:
            word["channel"] = channel
        words.append(word)
    return words


def after(words: list[dict], pause_ms: int) -> int:
    return words[-1]["end"] + pause_ms


def transcript(words: list[dict], dual: bool = False) -> dict:
    return {"blob": " ".join(w["text"] for w in words), "duration": (words[-1]["end"] + 500) / 1000 if words else 0.0,
            "stereo_decode": dual, "utterances": None, "words": words}


def clinic() -> dict:
    """A mono voicemail: titles, a.m. mid-sentence and at an end, amounts, decimals, a long pause."""
    first = spoken("Good morning, this is Dr. Patel calling about your visit. It starts at 10:30 a.m. on Friday. "
                   "Please arrive by 10 a.m. The copay is $49.99 and the dose is 3.5 mg.")
    second = spoken("Do you have any questions? Call us back at 555-0100, thanks!", start=after(first, 2500))
    return transcript(first + second)


CLINIC_SENTENCES = [
    "Good morning, this is Dr. Patel calling about your visit.",
    "It starts at 10:30 a.m. on Friday.",
    "Please arrive by 10 a.m.",
    "The copay is $49.99 and the dose is 3.5 mg.",
    "Do you have any questions?",
    "Call us back at 555-0100, thanks!",
]


def call() -> dict:
    """docs/API.md's dual-channel example: channel 1, channel 2, channel 1."""
    rows = [("Support", 734, 1334, 0.6985, "1"), ("line,", 1334, 1794, 0.7619, "1"), ("how", 2114, 2214, 0.7936, "1"),
            ("can", 2214, 2354, 0.994, "1"), ("I", 2354, 2574, 0.9844, "1"), ("help?", 2574, 3034, 0.9972, "1"),
            ("I", 3550, 3890, 0.7934, "2"), ("was", 3890, 4170, 0.9199, "2"), ("charged", 4170, 4630, 0.9611, "2"),
            ("$49", 4630, 5330, 0.8006, "2"), ("twice.", 5330, 6050, 0.6982, "2"), ("Let", 7010, 7170, 0.7401, "1"),
            ("me", 7170, 7470, 0.9832, "1"), ("check.", 7470, 7830, 0.9324, "1")]
    words = [{"text": t, "start": s, "end": e, "confidence": c, "channel": ch} for t, s, e, c, ch in rows]
    return transcript(words, dual=True) | {"duration": 8.4940625}


def unpunctuated() -> dict:
    """punctuate=false: no marks at all; one pause, then a long run without any."""
    first = spoken("i paid $49 25% of it at 10:30 am on the 21st")
    second = spoken("so we went over the weekly report " * 20, start=after(first, 1500))
    return transcript(first + second)


EMPTY = {"blob": "", "duration": 0.0, "stereo_decode": False, "utterances": None, "words": []}


# Subtitles: a parser of our own, so the files are checked as a player would read them.

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = SRT_TIME.replace(",", r"\.")


def ms(match: tuple[str, ...]) -> int:
    hours, minutes, seconds, millis = map(int, match)
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis


def parse_srt(text: str) -> list[tuple[int, int, str]]:
    if not text:
        return []
    assert text.endswith("\n") and not text.endswith("\n\n")
    cues = []
    for number, block in enumerate(text[:-1].split("\n\n"), 1):
        index, timing, caption = block.split("\n")
        assert index == str(number)
        found = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", timing)
        assert found, timing
        cues.append((ms(found.groups()[:4]), ms(found.groups()[4:]), caption))
    return cues


def parse_vtt(text: str) -> list[tuple[int, int, str]]:
    assert text.startswith("WEBVTT\n")
    body = text[len("WEBVTT\n"):]
    if not body:
        return []
    assert body.startswith("\n") and body.endswith("\n") and not body.endswith("\n\n")
    cues = []
    for block in body[1:-1].split("\n\n"):
        timing, caption = block.split("\n")
        found = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", timing)
        assert found, timing
        cues.append((ms(found.groups()[:4]), ms(found.groups()[4:]), caption))
    return cues


def test_srt_exact_form():
    words = spoken("Hello there.") + spoken("Bye.", start=3_723_456)
    assert exports.srt(transcript(words)) == (
        "1\n00:00:00,000 --> 00:00:00,700\nHello there.\n\n"
        "2\n01:02:03,456 --> 01:02:03,756\nBye.\n")


def test_vtt_exact_form():
    words = spoken("Hello there.") + spoken("Bye.", start=3_723_456)
    assert exports.vtt(transcript(words)) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:00.700\nHello there.\n\n"
        "01:02:03.456 --> 01:02:03.756\nBye.\n")


@pytest.mark.parametrize("chars", [None, 10, 20, 32, 80])
def test_captions_hold_whole_words_up_to_the_limit(chars):
    source = clinic()
    limit = chars or exports.DEFAULT_CHARS_PER_CAPTION
    cues = parse_srt(exports.srt(source, chars))
    assert parse_vtt(exports.vtt(source, chars)) == cues
    assert " ".join(text for _, _, text in cues) == source["blob"]  # every word once, in order, unsplit
    by_start = {w["start"]: w for w in source["words"]}
    for start, end, text in cues:
        assert len(text) <= limit or " " not in text
        assert start in by_start and start < end
    for (_, end, text), (start, _, following) in zip(cues, cues[1:]):
        assert end <= start
        assert (len(text) + 1 + len(following.split()[0]) > limit or start - end >= exports.CAPTION_PAUSE_MS
                or text.endswith((".", "?", "!")))


def test_a_caption_ends_with_its_sentence():
    cues = parse_srt(exports.srt(clinic(), 200))
    assert [text for _, _, text in cues] == CLINIC_SENTENCES


def test_a_long_pause_starts_a_caption():
    cues = parse_srt(exports.srt(unpunctuated(), 1000))
    assert [text.split()[:2] for _, _, text in cues] == [["i", "paid"], ["so", "we"]]


def test_a_word_longer_than_the_limit_is_a_caption_alone():
    cues = parse_srt(exports.srt(transcript(spoken("a extraordinarily b")), 5))
    assert [text for _, _, text in cues] == ["a", "extraordinarily", "b"]


def test_captions_never_mix_channels():
    agent = spoken("so your account", channel="1")
    caller = spoken("yes", start=after(agent, 100), channel="2")
    agent_again = spoken("is open now", start=after(caller, 100), channel="1")
    cues = parse_srt(exports.srt(transcript(agent + caller + agent_again, dual=True), 200))
    assert [text for _, _, text in cues] == ["so your account", "yes", "is open now"]


def test_bad_chars_per_caption():
    with pytest.raises(ValueError):
        exports.srt(clinic(), 0)
    with pytest.raises(ValueError):
        exports.vtt(clinic(), 32, per_segment=True)


def test_per_segment_cues_are_the_openai_segments():
    source = clinic()
    cues = parse_srt(exports.srt(source, per_segment=True))
    segments = exports.openai_verbose(source)["segments"]
    assert [text for _, _, text in cues] == CLINIC_SENTENCES
    assert [(s, e) for s, e, _ in cues] == [(round(seg["start"] * 1000), round(seg["end"] * 1000)) for seg in segments]
    assert parse_vtt(exports.vtt(source, per_segment=True)) == cues


# Sentences and paragraphs.


def texts(response: dict, key: str) -> list[str]:
    return [item["text"] for item in response[key]]


def test_sentences_respect_titles_abbreviations_and_decimals():
    assert texts(exports.sentences(clinic()), "sentences") == CLINIC_SENTENCES


@pytest.mark.parametrize(("text", "expected"), [
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("It costs $3.50, e.g. a coffee. Fine.", ["It costs $3.50, e.g. a coffee.", "Fine."]),
    ("Ask Mrs. Jones and Mr. Smith. They know.", ["Ask Mrs. Jones and Mr. Smith.", "They know."]),
    ("Well... maybe. Or... No!", ["Well... maybe.", "Or...", "No!"]),
    ("We ship to the U.S. Canada too.", ["We ship to the U.S.", "Canada too."]),
])
def test_sentence_rule(text, expected):
    assert texts(exports.sentences(transcript(spoken(text))), "sentences") == expected


def test_sentence_fields():
    source = clinic()
    first = exports.sentences(source)["sentences"][0]
    words = source["words"][:10]
    assert first["start"] == words[0]["start"] and first["end"] == words[-1]["end"]
    assert first["confidence"] == round(sum(w["confidence"] for w in words) / 10, 4)
    assert first["words"][0] == {**words[0], "speaker": None}
    assert first["speaker"] is None and "channel" not in first


def test_dual_channel_sentences_and_paragraphs_keep_channels():
    response = exports.sentences(call())
    assert [(s["channel"], s["text"]) for s in response["sentences"]] == [
        ("1", "Support line, how can I help?"), ("2", "I was charged $49 twice."), ("1", "Let me check.")]
    assert all(w["channel"] == s["channel"] for s in response["sentences"] for w in s["words"])
    assert response["audio_duration"] == 8.4940625
    paragraphs = exports.paragraphs(call())["paragraphs"]
    assert [p["channel"] for p in paragraphs] == ["1", "2", "1"]


def test_unpunctuated_sentences_break_at_pauses_and_are_capped():
    response = exports.sentences(unpunctuated())
    lengths = [len(s["words"]) for s in response["sentences"]]
    assert response["sentences"][0]["text"] == "i paid $49 25% of it at 10:30 am on the 21st"
    assert lengths[1:] == [50, 50, 40]


def test_paragraphs_break_at_long_pauses():
    response = exports.paragraphs(clinic())
    assert texts(response, "paragraphs") == [" ".join(CLINIC_SENTENCES[:4]), " ".join(CLINIC_SENTENCES[4:])]
    assert sum(len(p["words"]) for p in response["paragraphs"]) == len(clinic()["words"])


def test_paragraphs_are_capped_in_words():
    words = spoken("This is a short sentence of eight words. " * 30)
    paragraphs = exports.paragraphs(transcript(words))["paragraphs"]
    assert [len(p["words"]) for p in paragraphs] == [96, 96, 48]  # whole sentences, none past 100 words
    assert all(p["text"].endswith("words.") for p in paragraphs)


# Word search.


def search(source: dict, *terms: str) -> dict[str, dict]:
    return {match["text"]: match for match in exports.word_search(source, list(terms))["matches"]}


def test_search_ignores_case_and_edge_punctuation():
    source = call()
    found = search(source, "HELP", "line", "twice")
    assert found["HELP"] == {"text": "HELP", "count": 1, "timestamps": [[2574, 3034]], "indexes": [5]}
    assert found["line"]["indexes"] == [1] and found["twice"]["indexes"] == [10]


def test_search_signs_are_optional_in_the_term():
    source = transcript(spoken("I paid $49 not 49 and 49% of 49.99."))
    found = search(source, "49", "$49", "49.99", "25")
    assert found["49"]["indexes"] == [2, 4, 6]
    assert found["$49"]["indexes"] == [2]
    assert found["49.99"]["indexes"] == [8]
    assert found["25"] == {"text": "25", "count": 0, "timestamps": [], "indexes": []}


def test_search_phrases_match_consecutive_words():
    source = unpunctuated()
    found = search(source, "weekly report", "the weekly report", "report so", "went weekly")
    words = source["words"]
    first = found["weekly report"]["indexes"][0]
    assert found["weekly report"]["count"] == 20
    assert found["weekly report"]["timestamps"][0] == [words[first]["start"], words[first + 1]["end"]]
    assert words[first]["text"] == "weekly" and words[first + 1]["text"] == "report"
    assert found["the weekly report"]["count"] == 20 and found["report so"]["count"] == 19
    assert found["went weekly"]["count"] == 0


def test_search_phrases_never_span_channels():
    assert search(call(), "help? I", "I was")["help? I"]["count"] == 0
    assert search(call(), "I was")["I was"]["indexes"] == [6]


def test_search_totals_and_ignores_empty_and_repeated_terms():
    response = exports.word_search(call(), ["I", "", "  ", "i", "?", "check"])
    assert [m["text"] for m in response["matches"]] == ["I", "check"]
    assert response["total_count"] == 3


def test_search_matches_do_not_overlap():
    assert search(transcript(spoken("ha ha ha ha ha")), "ha ha")["ha ha"]["indexes"] == [0, 2]


# OpenAI formats.


def test_openai_json_and_text():
    assert exports.openai_json(call()) == {"text": call()["blob"]}
    assert exports.openai_text(call()) == call()["blob"] + "\n"


def test_openai_verbose_words_and_segments():
    source = call()
    result = exports.openai_verbose(source, words=True, segments=True, encode=lambda text: list(text.encode()))
    assert result["task"] == "transcribe" and result["language"] == "english"
    assert result["duration"] == 8.4940625 and result["text"] == source["blob"]
    assert result["words"][:2] == [{"word": "Support", "start": 0.734, "end": 1.334},
                                  {"word": "line", "start": 1.334, "end": 1.794}]
    assert [w["word"] for w in result["words"]][9] == "$49"
    first = result["segments"][0]
    confidences = [w["confidence"] for w in source["words"][:6]]
    assert first["text"] == " Support line, how can I help?"
    assert first["tokens"] == list(first["text"].encode())
    assert (first["id"], first["seek"], first["start"], first["end"]) == (0, 73, 0.734, 3.034)
    assert first["avg_logprob"] == pytest.approx(sum(map(math.log, confidences)) / 6)
    assert first["compression_ratio"] == compression_ratio(first["text"])
    assert (first["temperature"], first["no_speech_prob"]) == (0.0, 0.0)
    assert [s["id"] for s in result["segments"]] == [0, 1, 2]


def test_openai_verbose_granularities():
    plain = exports.openai_verbose(clinic())
    assert "words" not in plain and plain["segments"][0]["tokens"] == []
    assert "segments" not in exports.openai_verbose(clinic(), words=True, segments=False)


def test_avg_logprob_survives_zero_confidence():
    words = spoken("Hi.")
    words[0]["confidence"] = 0.0
    segment = exports.openai_verbose(transcript(words))["segments"][0]
    assert segment["avg_logprob"] == pytest.approx(math.log(1e-6))


# Every view of every transcript, against the SDKs' own models.

SOURCES = {"clinic": clinic, "call": call, "unpunctuated": unpunctuated, "empty": lambda: EMPTY}


@pytest.mark.parametrize("name", SOURCES)
def test_views_validate_against_the_sdk_models(name):
    aai = pytest.importorskip("assemblyai.types")
    audio = pytest.importorskip("openai.types.audio")
    source = SOURCES[name]()
    aai.SentencesResponse.parse_obj(exports.sentences(source))
    aai.ParagraphsResponse.parse_obj(exports.paragraphs(source))
    aai.WordSearchMatchResponse.parse_obj(exports.word_search(source, ["help", "weekly report", "nothing"]))
    verbose = audio.TranscriptionVerbose(**exports.openai_verbose(source, words=True, segments=True))
    assert verbose.text == source["blob"]


def test_empty_transcript():
    assert exports.srt(EMPTY) == "" and parse_srt(exports.srt(EMPTY, per_segment=True)) == []
    assert exports.vtt(EMPTY) == "WEBVTT\n" and parse_vtt(exports.vtt(EMPTY)) == []
    assert exports.sentences(EMPTY) == {"sentences": [], "confidence": 0.0, "audio_duration": 0.0}
    assert exports.paragraphs(EMPTY) == {"paragraphs": [], "confidence": 0.0, "audio_duration": 0.0}
    assert exports.word_search(EMPTY, ["help"]) == {
        "total_count": 0, "matches": [{"text": "help", "count": 0, "timestamps": [], "indexes": []}]}
    assert exports.openai_json(EMPTY) == {"text": ""} and exports.openai_text(EMPTY) == "\n"
    assert exports.openai_verbose(EMPTY, words=True) == {
        "task": "transcribe", "language": "english", "duration": 0.0, "text": "", "words": [], "segments": []}
