"""Per-transcription decoding choices: Whisper's initial prompt and the temperature schedule.

They travel with a transcription from the API to every one of its windows, across processes in the
daemon, so they are a small frozen picklable value with nothing heavy to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.text.tokenizer import WhisperTokenizer

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

# Prompt tokens kept (the last ones): n_text_ctx / 2 - 1 of every Whisper model (448 / 2 - 1), as
# openai/whisper and faster-whisper keep them. A window's prompt is prefilled once, in one row, and
# its beam's other rows copy that row's cache (search.WindowSearch.first_tokens); the search stops
# early enough that prompt, SOT sequence and text fit the text context (WindowSearch's token limit).
MAX_PROMPT_TOKENS = 223

# word_boost bounds (AssemblyAI's own: phrases of at most 6 words); a request past them is a 400.
MAX_BOOST_PHRASES = 1000
MAX_BOOST_WORDS = 6
MAX_BOOST_CHARS = 100
BOOST_PARAMS = ("low", "default", "high")


@dataclass(frozen=True)
class DecodeOptions:
    """How the windows of one transcription are decoded.

    prompt: Whisper's initial prompt (OpenAI's `prompt`): text the model reads as if it preceded
        the audio, which steers spelling and style. Our windows are decoded independently, so it
        precedes every window. Only its last MAX_PROMPT_TOKENS (223) tokens are used; None or blank
        means no prompt.
    temperatures: the fallback schedule. The first is tried first (0 is beam search, above 0
        samples `best_of` rows); a suspect result is decoded again at each next one in turn.
        A single temperature decodes each window once, at that temperature.
    word_boost: words or phrases the beam search is drawn toward (AssemblyAI's word_boost): they
        lead the prompt, and a hypothesis is rewarded as it spells one (engine.lm.fusion.WordBoost)
        with `boost_param`'s strength; a window they had nothing to do with is decoded as without
        them, one that nearly spelled a phrase again with it alone (engine/decoding/fallback.py).
    """

    prompt: str | None = None
    temperatures: tuple[float, ...] = TEMPERATURES
    word_boost: tuple[str, ...] = ()
    boost_param: str = "default"

    def __post_init__(self) -> None:
        temperatures = tuple(float(t) for t in self.temperatures)
        if not temperatures:
            raise ValueError("temperatures must hold at least one temperature")
        if not all(0.0 <= t <= 1.0 for t in temperatures):
            raise ValueError(f"temperatures must be between 0 and 1; got {temperatures}")
        object.__setattr__(self, "temperatures", temperatures)
        object.__setattr__(self, "word_boost", check_word_boost(self.word_boost))
        if self.boost_param not in BOOST_PARAMS:
            raise ValueError(f"boost_param must be one of {', '.join(BOOST_PARAMS)}; got {self.boost_param!r}")

    @classmethod
    def for_request(cls, prompt: str | None = None, temperature: float | None = None,
                    word_boost: tuple[str, ...] = (), boost_param: str = "default") -> "DecodeOptions":
        """OpenAI's transcription parameters: temperature None or 0 keeps the fallback schedule.

        OpenAI: "If set to 0, the model will use log probability to automatically increase the
        temperature until certain thresholds are hit"; any other temperature samples at it alone.
        """
        return cls(prompt, (temperature,) if temperature else TEMPERATURES, tuple(word_boost), boost_param)

    def scorers(self, tokenizer: WhisperTokenizer) -> tuple:
        """This transcription's own beam scorers (search.WindowSearch's `scorers`)."""
        if not self.word_boost:
            return ()
        from engine.lm.fusion import word_boost

        return (word_boost(self.word_boost, tokenizer, self.boost_param),)

    def prompt_tokens(self, tokenizer: WhisperTokenizer) -> tuple[int, ...]:
        """What the decoder reads before the SOT sequence: <|startofprev|> and the prompt's tokens.

        Encoded as Whisper encodes an initial prompt (" " + the stripped text); empty without one.
        Boosted words go first, as a list ("Montreal Forced Aligner, MFA."): read as preceding
        text they make the model spell them itself, which the scorer's reward alone rarely does
        for a term the model has never heard (bench/RESULTS.md, custom language model). The
        caller's prompt follows them, so it stays the text nearest the audio; when the two are
        longer than the bound, the first boosted words are the ones dropped.
        """
        hints = ", ".join(self.word_boost) + "." if self.word_boost else ""
        text = " ".join(part for part in (hints, (self.prompt or "").strip()) if part)
        if not text:
            return ()
        return (tokenizer.sot_prev, *tokenizer.encode(" " + text)[-MAX_PROMPT_TOKENS:])


def check_word_boost(phrases: object) -> tuple[str, ...]:
    """word_boost as a tuple of stripped phrases; ValueError (naming the rule broken) otherwise.

    Blank entries are dropped; an entry must hold a word the decoder can spell (letters or digits).
    """
    if isinstance(phrases, str) or not isinstance(phrases, (list, tuple)):
        raise ValueError("word_boost must be a list of words or phrases")
    if len(phrases) > MAX_BOOST_PHRASES:
        raise ValueError(f"word_boost holds at most {MAX_BOOST_PHRASES} words or phrases; got {len(phrases)}")
    kept = []
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise ValueError("word_boost must be a list of strings")
        phrase = " ".join(phrase.split())
        if not phrase:
            continue
        if len(phrase) > MAX_BOOST_CHARS or len(phrase.split()) > MAX_BOOST_WORDS:
            raise ValueError(f"each word_boost entry is at most {MAX_BOOST_WORDS} words and {MAX_BOOST_CHARS} "
                             f"characters; got {phrase[:40]!r}")
        if not any(c.isalnum() for c in phrase):
            raise ValueError(f"each word_boost entry needs a letter or a digit; got {phrase!r}")
        kept.append(phrase)
    return tuple(dict.fromkeys(kept))
