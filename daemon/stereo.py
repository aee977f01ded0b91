"""The dual_channel response: both channels' words merged by time into turn-by-turn utterances."""

from __future__ import annotations

from engine.result import Word

UTTERANCE_PAUSE_MS = 1500  # a longer pause within one channel starts a new utterance


def dual_channel_body(channels: list[list[Word]], duration: float, uid: str) -> dict:
    """The dual_channel response: words of both channels merged by time, grouped into turn-by-turn utterances.

    An utterance is a run of one channel's words; it ends when the other channel speaks or after a
    pause longer than UTTERANCE_PAUSE_MS.
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
            "start": run[0][0].start_ms,
            "end": max(word.end_ms for word, _ in run),
            "confidence": sum(word.confidence for word, _ in run) / len(run),
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
