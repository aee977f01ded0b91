"""Views of one finished transcript: subtitles, sentences, paragraphs, word search, OpenAI shapes.

AssemblyAI's v2 API (/srt, /vtt, /sentences, /paragraphs, /word-search), OpenAI's
/v1/audio/transcriptions formats and the CLI all show the same stored transcript (the body of
POST /transcribe/url: `blob`, `duration` in seconds, `words` with ms times and, for a call, a
`channel`). They are pure functions here so that every surface cuts the transcript the same way.

Words are taken in the order the transcript stores them (by start time; a call's two channels
merged), so word indexes here are indexes into the transcript's own `words` array. Nothing ever
groups words of two channels together: a channel change ends every caption, sentence, paragraph
and phrase match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeVar

from engine.text.compression import compression_ratio

# Captions. 32 characters is the width of a broadcast caption line (CEA-608) and the value
# AssemblyAI's documentation passes as chars_per_caption; short cues stay readable on phones.
DEFAULT_CHARS_PER_CAPTION = 32
CAPTION_PAUSE_MS = 1000  # a caption must not stay on screen across a silence

# Sentences. The pause only counts for transcripts without punctuation (punctuate=false), where
# it is the only hint there is; the caps keep a run-on (or an unpunctuated file) from becoming one
# sentence, and 30 s is Whisper's window, so a sentence also fits one OpenAI segment.
SENTENCE_PAUSE_MS = 1000
MAX_SENTENCE_WORDS = 50
MAX_SENTENCE_MS = 30_000

# Paragraphs: groups of whole sentences, broken at a pause a listener hears as a change of topic
# or at a size past which a paragraph stops being one.
PARAGRAPH_PAUSE_MS = 2000
MAX_PARAGRAPH_WORDS = 100
MAX_PARAGRAPH_MS = 60_000

# Sentence punctuation. A "." after a title is never an end ("Dr. Patel"). After an abbreviation
# ("a.m.", "e.g.", "etc.") or an ellipsis it ends a sentence only before a capitalised word,
# since "at 10 a.m. on Friday" goes on and "by 10 a.m. The copay" does not. Periods inside a word
# ("$49.99", "3.5", "10:30") never end one: only the last character counts.
_CLOSERS = "\"')]}»”’"
_TITLES = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "mt.", "rev.", "vs."})
_ABBREVIATIONS = frozenset({"etc.", "inc.", "ltd.", "co.", "corp.", "jr.", "sr.", "approx."})
_DOTTED = re.compile(r"(?:[^\W\d_]\.){2,}")  # a.m., p.m., e.g., i.e., U.S.
_SENTENCE_MARKS = (".", "?", "!", "…")

# Word search and OpenAI's bare words: punctuation at a word's edges is not part of the word.
# "-" stays ("-5"), and so do currency and percent signs ("$49", "25%"), which are part of the
# amount; a search term without a sign still finds the amount (see word_search).
_EDGE_PUNCTUATION = ".,?!;:\"'()[]{}…—–«»“”‘’¿¡"
_UNIT_SIGNS = "$€£¥%"

Item = TypeVar("Item")


def srt(transcript: dict, chars_per_caption: int | None = None, *, per_segment: bool = False) -> str:
    """SubRip subtitles: numbered cues from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line between.

    per_segment gives one cue per OpenAI segment, as Whisper's own srt does, instead of
    chars_per_caption-sized captions (AssemblyAI's). An empty transcript is an empty file.
    """
    blocks = [f"{number}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
              for number, (start, end, text) in enumerate(_cues(transcript, chars_per_caption, per_segment), 1)]
    return "\n".join(blocks)


def vtt(transcript: dict, chars_per_caption: int | None = None, *, per_segment: bool = False) -> str:
    """WebVTT subtitles: `WEBVTT`, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`, each after a blank line.

    Hours are always written (OpenAI's vtt does the same), so every cue has one timestamp form.
    The cues are srt()'s; an empty transcript is the header alone.
    """
    cues = _cues(transcript, chars_per_caption, per_segment)
    return "WEBVTT\n" + "".join(f"\n{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n"
                                for start, end, text in cues)


def sentences(transcript: dict) -> dict:
    """AssemblyAI's SentencesResponse: the words cut into sentences (rules at the top of this module)."""
    return {
        "sentences": [_span(group) for group in _sentence_groups(_words(transcript))],
        "confidence": _mean_confidence(_words(transcript)),
        "audio_duration": transcript.get("duration", 0.0),
    }


def paragraphs(transcript: dict) -> dict:
    """AssemblyAI's ParagraphsResponse: consecutive sentences of one channel, as one paragraph.

    A new paragraph starts at a pause of PARAGRAPH_PAUSE_MS between sentences, at a channel
    change, or where the next sentence would take it past MAX_PARAGRAPH_WORDS or MAX_PARAGRAPH_MS;
    a sentence is never split, so one longer than the caps is a paragraph of its own.
    """
    groups = _group(_sentence_groups(_words(transcript)), _starts_paragraph)
    return {
        "paragraphs": [_span([word for sentence in group for word in sentence]) for group in groups],
        "confidence": _mean_confidence(_words(transcript)),
        "audio_duration": transcript.get("duration", 0.0),
    }


def word_search(transcript: dict, words: list[str]) -> dict:
    """AssemblyAI's WordSearchMatchResponse for the search terms `words`.

    Matching ignores case and the punctuation at word edges ("help" finds "help?"). A currency or
    percent sign is optional in the term: "49" finds "49", "$49" and "49%", while "$49" finds only
    "$49". A term of several words finds them as consecutive words of one channel; its timestamp
    runs from the first word's start to the last word's end, and its index is the first word's
    (so timestamps, indexes and count stay parallel). Matches do not overlap. Every term is
    answered, with count 0 when absent; empty and repeated terms are left out.
    """
    stored = _words(transcript)
    variants = [_search_variants(word["text"]) for word in stored]
    matches = []
    seen: set[tuple[str, ...]] = set()
    for term in words:
        tokens = tuple(token for token in (_bare(part).lower() for part in term.split()) if token)
        if tokens and tokens not in seen:
            seen.add(tokens)
            matches.append(_term_matches(term.strip(), tokens, stored, variants))
    return {"total_count": sum(match["count"] for match in matches), "matches": matches}


def openai_json(transcript: dict) -> dict:
    """OpenAI's `json` response format."""
    return {"text": transcript.get("blob", "")}


def openai_diarized(transcript: dict) -> dict:
    """OpenAI's `diarized_json` (TranscriptionDiarized): one segment per utterance of one speaker, in seconds."""
    return {"task": "transcribe", "duration": transcript.get("duration", 0.0), "text": transcript.get("blob", ""),
            "segments": [{"id": f"seg_{index}", "type": "transcript.text.segment", "start": u["start"] / 1000,
                          "end": u["end"] / 1000, "text": u["text"], "speaker": u["speaker"]}
                         for index, u in enumerate(transcript.get("utterances") or [])]}


def openai_text(transcript: dict) -> str:
    """OpenAI's `text` response format: the text and a newline, as whisper-1 sends it."""
    return transcript.get("blob", "") + "\n"


def openai_verbose(transcript: dict, *, words: bool = False, segments: bool = True, language: str = "english",
                   encode: Callable[[str], list[int]] | None = None) -> dict:
    """OpenAI's `verbose_json` (TranscriptionVerbose); words and segments as timestamp_granularities asks.

    Times are in seconds. Words are bare (no edge punctuation), as OpenAI's are. Segments are the
    sentences, each text starting with a space as Whisper's do; `encode` (the Whisper tokenizer's)
    fills `tokens`, else they are empty. Temperature and no_speech_prob are 0: the stored
    transcript no longer knows them, and the words it kept were speech.
    """
    body: dict = {"task": "transcribe", "language": language, "duration": transcript.get("duration", 0.0),
                  "text": transcript.get("blob", "")}
    stored = _words(transcript)
    if words:
        body["words"] = [{"word": _bare(word["text"]), "start": _seconds(word["start"]), "end": _seconds(word["end"])}
                         for word in stored if _bare(word["text"])]
    if segments:
        body["segments"] = [_segment(index, group, encode) for index, group in enumerate(_sentence_groups(stored))]
    return body


def _cues(transcript: dict, chars_per_caption: int | None, per_segment: bool) -> list[tuple[int, int, str]]:
    if per_segment and chars_per_caption is not None:
        raise ValueError("chars_per_caption applies to captions, not to one cue per segment")
    if chars_per_caption is not None and chars_per_caption < 1:
        raise ValueError(f"chars_per_caption must be at least 1, got {chars_per_caption}")
    stored = _words(transcript)
    groups = _sentence_groups(stored) if per_segment else _caption_groups(stored, chars_per_caption)
    return [(group[0]["start"], _end(group), _text(group)) for group in groups]


def _caption_groups(words: list[dict], chars_per_caption: int | None) -> list[list[dict]]:
    """Captions of whole words up to the limit; a word longer than the limit is a caption alone.

    A caption also ends with its sentence, so no cue shows the tail of one sentence with the head
    of the next ("... by 10 a.m. The").
    """
    limit = chars_per_caption or DEFAULT_CHARS_PER_CAPTION

    def starts_caption(caption: list[dict], word: dict) -> bool:
        return (_channel_changes(caption, word) or word["start"] - caption[-1]["end"] >= CAPTION_PAUSE_MS
                or len(_text(caption)) + 1 + len(word["text"]) > limit
                or _ends_sentence(caption[-1]["text"], word["text"]))

    return _group(words, starts_caption)


def _sentence_groups(words: list[dict]) -> list[list[dict]]:
    """Sentences: punctuation ends them, or, in a transcript with none, pauses; both are capped."""
    punctuated = any(_core(word["text"]).endswith(_SENTENCE_MARKS) for word in words)

    def starts_sentence(sentence: list[dict], word: dict) -> bool:
        if (_channel_changes(sentence, word) or len(sentence) >= MAX_SENTENCE_WORDS
                or word["end"] - sentence[0]["start"] > MAX_SENTENCE_MS):
            return True
        if punctuated:
            return _ends_sentence(sentence[-1]["text"], word["text"])
        return word["start"] - sentence[-1]["end"] >= SENTENCE_PAUSE_MS

    return _group(words, starts_sentence)


def _starts_paragraph(paragraph: list[list[dict]], sentence: list[dict]) -> bool:
    last, first = paragraph[-1], paragraph[0]
    return (_channel_changes(last, sentence[0]) or sentence[0]["start"] - _end(last) >= PARAGRAPH_PAUSE_MS
            or sum(map(len, paragraph)) + len(sentence) > MAX_PARAGRAPH_WORDS
            or _end(sentence) - first[0]["start"] > MAX_PARAGRAPH_MS)


def _ends_sentence(text: str, next_text: str) -> bool:
    core = _core(text)
    if core.endswith(("?", "!")):
        return True
    if not core.endswith((".", "…")):
        return False
    lower = core.lower()
    if lower in _TITLES:
        return False
    if lower in _ABBREVIATIONS or core.endswith(("..", "…")) or _DOTTED.fullmatch(lower):
        return _bare(next_text)[:1].isupper()
    return True


def _term_matches(text: str, tokens: tuple[str, ...], words: list[dict], variants: list[set[str]]) -> dict:
    timestamps: list[list[int]] = []
    indexes: list[int] = []
    index = 0
    while index + len(tokens) <= len(words):
        run = words[index:index + len(tokens)]
        if all(token in variants[index + offset] for offset, token in enumerate(tokens)) and \
                len({word.get("channel") for word in run}) == 1:
            timestamps.append([run[0]["start"], run[-1]["end"]])
            indexes.append(index)
            index += len(tokens)
        else:
            index += 1
    return {"text": text, "count": len(indexes), "timestamps": timestamps, "indexes": indexes}


def _search_variants(text: str) -> set[str]:
    """The forms of a stored word that a search token may equal: as written, and without its signs."""
    bare = _bare(text).lower()
    return {bare, bare.strip(_UNIT_SIGNS)}


def _segment(index: int, words: list[dict], encode: Callable[[str], list[int]] | None) -> dict:
    text = " " + _text(words)
    start = _seconds(words[0]["start"])
    return {
        "id": index,
        "seek": int(start * 100),
        "start": start,
        "end": _seconds(_end(words)),
        "text": text,
        "tokens": encode(text) if encode else [],
        "temperature": 0.0,
        "avg_logprob": sum(math.log(max(word["confidence"], 1e-6)) for word in words) / len(words),
        "compression_ratio": compression_ratio(text),
        "no_speech_prob": 0.0,
    }


def _span(words: list[dict]) -> dict:
    """A sentence or paragraph as AssemblyAI shapes it; `channel` only for a call's words."""
    span = {
        "text": _text(words),
        "start": words[0]["start"],
        "end": _end(words),
        "confidence": _mean_confidence(words),
        "words": [_assemblyai_word(word) for word in words],
        "speaker": None,
    }
    if "channel" in words[0]:
        span["channel"] = words[0]["channel"]
    return span


def _assemblyai_word(word: dict) -> dict:
    shaped = {"text": word["text"], "start": word["start"], "end": word["end"],
              "confidence": word["confidence"], "speaker": None}
    if "channel" in word:
        shaped["channel"] = word["channel"]
    return shaped


def _group(items: list[Item], starts_new: Callable[[list[Item], Item], bool]) -> list[list[Item]]:
    """Consecutive runs of items; starts_new(run so far, item) says where a run ends."""
    groups: list[list[Item]] = []
    for item in items:
        if not groups or starts_new(groups[-1], item):
            groups.append([])
        groups[-1].append(item)
    return groups


def _words(transcript: dict) -> list[dict]:
    return transcript.get("words") or []


def _channel_changes(run: list[dict], word: dict) -> bool:
    return run[-1].get("channel") != word.get("channel")


def _text(words: list[dict]) -> str:
    return " ".join(word["text"] for word in words)


def _end(words: list[dict]) -> int:
    return max(word["end"] for word in words)


def _mean_confidence(words: list[dict]) -> float:
    return round(sum(word["confidence"] for word in words) / len(words), 4) if words else 0.0


def _core(text: str) -> str:
    """The word without closing quotes and brackets, so '"Really?"' ends like 'Really?'."""
    return text.rstrip(_CLOSERS)


def _bare(text: str) -> str:
    return text.strip(_EDGE_PUNCTUATION)


def _seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(int(round(ms)), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"
