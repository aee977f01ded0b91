"""The API's response body from each channel's words, shared by the CLI and the daemon.

Words arrive in the time of the audio that was transcribed; here they move to file time, take
the text options, and, for a call, merge into turn-by-turn utterances. The CLI's --json and
the HTTP answer are therefore the same document for the same file and options.
"""

from __future__ import annotations

import bisect
from dataclasses import replace

from engine.result import Transcript, Word, new_uid
from engine.speakers.options import speaker_name
from engine.text.format import TextOptions, format_words

UTTERANCE_PAUSE_MS = 1500  # a longer pause within one channel starts a new utterance


def response_body(channels: list[list[Word]], duration: float, offset_ms: int, options: TextOptions,
                  dual_channel: bool, uid: str | None = None, speakers: list[int] | None = None,
                  names: list[str] | None = None) -> dict:
    """The body of POST /transcribe/url for one file: one channel, a call's two, or one channel whose
    words carry `speakers` (a speaker number per word of channels[0], engine/speakers/diarize.py), shown
    by `names` (one per number; by default A, B, ...)."""
    shaped = [format_words(_shifted(words, offset_ms), options) for words in channels]
    uid = uid or new_uid()
    if dual_channel:
        return dual_channel_body(shaped, duration, uid)
    if speakers is not None:
        spoken = _speakers_of(shaped[0], _shifted(channels[0], offset_ms), speakers, names)
        return _utterances_body([(word, "speaker", name) for word, name in zip(shaped[0], spoken)], duration, uid,
                                stereo=False)
    return Transcript(shaped[0], duration).as_dict(uid)


def dual_channel_body(channels: list[list[Word]], duration: float, uid: str) -> dict:
    """Both channels' words merged by start time and grouped into turn-by-turn utterances.

    Overlapping speech keeps both channels' words, so two speakers talking at once alternate
    utterances in start order.
    """
    tagged = sorted(((word, "channel", str(index + 1)) for index, words in enumerate(channels) for word in words),
                    key=lambda item: (item[0].start_ms, item[2]))
    return _utterances_body(tagged, duration, uid, stereo=True)


def _utterances_body(tagged: list[tuple[Word, str, str]], duration: float, uid: str, stereo: bool) -> dict:
    """Words tagged with their channel or speaker, in time order, as turn-by-turn utterances.

    An utterance is a run of one channel's (or speaker's) words; it ends when another speaks or after a
    pause longer than UTTERANCE_PAUSE_MS.
    """
    runs: list[list[tuple[Word, str, str]]] = []
    for item in tagged:
        last = runs[-1][-1] if runs else None
        if last is None or last[2] != item[2] or item[0].start_ms - last[0].end_ms > UTTERANCE_PAUSE_MS:
            runs.append([])
        runs[-1].append(item)
    utterances = [
        {
            run[0][1]: run[0][2],
            "confidence": round(sum(word.confidence for word, _, _ in run) / len(run), 4),
            "end": max(word.end_ms for word, _, _ in run),
            "start": run[0][0].start_ms,
            "text": " ".join(word.text for word, _, _ in run),
            "words": [{**word.as_dict(), key: value} for word, key, value in run],
        }
        for run in runs
    ]
    return {
        "blob": " ".join(u["text"] for u in utterances),
        "duration": duration,
        "stereo_decode": stereo,
        "uid": uid,
        "utterances": utterances,
        "words": [{**word.as_dict(), key: value} for word, key, value in tagged],
    }


def _speakers_of(shaped: list[Word], raw: list[Word], speakers: list[int], names: list[str] | None) -> list[str]:
    """Each formatted word's speaker: that of the raw word it was made from (formatting joins "twenty
    five" into "25") that overlaps it most, or else the nearest. Both lists are in time order."""
    starts = [word.start_ms for word in raw]
    labels = []
    for word in shaped:
        first = max(0, bisect.bisect_left(starts, word.start_ms) - 2)
        last = min(len(raw), bisect.bisect_right(starts, word.end_ms) + 1)
        nearby = [(min(word.end_ms, raw[i].end_ms) - max(word.start_ms, raw[i].start_ms),
                   -abs(raw[i].start_ms - word.start_ms), speakers[i]) for i in range(first, last)]
        labels.append(max(nearby)[2] if nearby else 0)
    return [names[label] if names else speaker_name(label) for label in labels]


def _shifted(words: list[Word], offset_ms: int) -> list[Word]:
    if not offset_ms:
        return words
    return [replace(w, start_ms=w.start_ms + offset_ms, end_ms=w.end_ms + offset_ms) for w in words]
