"""The API's response body from each channel's words, shared by the CLI and the daemon.

Words arrive in the time of the audio that was transcribed; here they move to file time, take
the text options, and, for a call, merge into turn-by-turn utterances. The CLI's --json and
the HTTP answer are therefore the same document for the same file and options.
"""

from __future__ import annotations

from dataclasses import replace

from engine.result import Transcript, Word, new_uid
from engine.text.format import TextOptions, format_words

UTTERANCE_PAUSE_MS = 1500  # a longer pause within one channel starts a new utterance


def response_body(channels: list[list[Word]], duration: float, offset_ms: int, options: TextOptions,
                  dual_channel: bool, uid: str | None = None) -> dict:
    """The body of POST /transcribe/url for one file: one channel, or a call's two."""
    shaped = [format_words(_shifted(words, offset_ms), options) for words in channels]
    uid = uid or new_uid()
    if dual_channel:
        return dual_channel_body(shaped, duration, uid)
    return Transcript(shaped[0], duration).as_dict(uid)


def dual_channel_body(channels: list[list[Word]], duration: float, uid: str) -> dict:
    """Both channels' words merged by start time and grouped into turn-by-turn utterances.

    An utterance is a run of one channel's words; it ends when the other channel speaks or after a
    pause longer than UTTERANCE_PAUSE_MS. Overlapping speech keeps both channels' words, so two
    speakers talking at once alternate utterances in start order.
    """
    tagged = sorted(((word, str(index + 1)) for index, words in enumerate(channels) for word in words),
                    key=lambda item: (item[0].start_ms, item[1]))
    runs: list[list[tuple[Word, str]]] = []
    for word, channel in tagged:
        last = runs[-1][-1] if runs else None
        if last is None or last[1] != channel or word.start_ms - last[0].end_ms > UTTERANCE_PAUSE_MS:
            runs.append([])
        runs[-1].append((word, channel))
    utterances = [
        {
            "channel": run[0][1],
            "confidence": round(sum(word.confidence for word, _ in run) / len(run), 4),
            "end": max(word.end_ms for word, _ in run),
            "start": run[0][0].start_ms,
            "text": " ".join(word.text for word, _ in run),
            "words": [{**word.as_dict(), "channel": channel} for word, channel in run],
        }
        for run in runs
    ]
    return {
        "blob": " ".join(u["text"] for u in utterances),
        "duration": duration,
        "stereo_decode": True,
        "uid": uid,
        "utterances": utterances,
        "words": [{**word.as_dict(), "channel": channel} for word, channel in tagged],
    }


def _shifted(words: list[Word], offset_ms: int) -> list[Word]:
    if not offset_ms:
        return words
    return [replace(w, start_ms=w.start_ms + offset_ms, end_ms=w.end_ms + offset_ms) for w in words]
