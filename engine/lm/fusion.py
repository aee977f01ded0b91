"""Scorers that bias the beam toward a domain: KenLM shallow fusion and per-request boosted words.

Both follow a hypothesis's spelling token by token (WhisperTokenizer.token_texts) and keep their
progress as a small immutable state per hypothesis (logit_rules.Scorer), so a step costs a few
dictionary lookups per beam candidate, never a pass over the hypothesis's tokens. Neither touches
the model's probabilities: confidences and Whisper's fallback test stay the model's own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

from engine.lm.text import normalize_words
from engine.text.tokenizer import lower_text

if TYPE_CHECKING:
    from engine.lm.domain_terms import DomainTerms
    from engine.settings import EngineSettings
    from engine.text.tokenizer import WhisperTokenizer

LN10 = math.log(10.0)

# word_boost's strength, AssemblyAI's boost_param: the reward (log domain) per character of a boosted
# phrase's spelling that a hypothesis follows; tuned on the dev half of bench/domains (docs/LANGUAGE_MODEL.md).
BOOST_REWARD = {"low": 0.1, "default": 0.25, "high": 0.4}
# Two boosted phrases that share this much of the shorter one from their start are forms of one term
# ("forced aligner", "forced alignment"). Once a hypothesis spells one, the other earns nothing: paid for
# each form, a beam that has said the term goes on to read the next form off the prompt's list
# ("Montreal forced aligner, forced alignment." for "Montreal forced, forced aligner").
SAME_TERM_SHARE = 0.8


@dataclass(frozen=True)
class _LmState:
    context: object  # kenlm.State after the completed words
    partial: str  # the text of the word being spelled (its leading space included)


class LanguageModelFusion:
    """Shallow fusion: weight · ln(P_LM(word | context) / P_LM(word)) + word_bonus, added as each word completes.

    The LM's score is taken relative to the same LM's unigram probability of the word (a density
    ratio, with the domain model's own unigrams standing in for general English): a domain corpus
    knows few of the words of ordinary speech, and its plain log-probabilities would push every
    hypothesis toward its vocabulary. Relative to the unigram, a word gains only where the domain's
    context predicts it ("aligner" after "montreal forced"), a word outside the model's vocabulary
    gains nothing, and general speech is left almost alone (docs/LANGUAGE_MODEL.md has the dev
    measurements, and the look-ahead that was tried and dropped).

    A word completes when the next token starts a new word (a leading space), or at a timestamp or
    the end of the text, so "Al"+"ign"+"er" is scored once, as "aligner". Words go through
    lm_text.normalize_words, the normaliser `lm build` used on the corpus. Each window starts from
    KenLM's null context: a window may begin mid-sentence.
    """

    def __init__(self, model, token_texts: Sequence[str], weight: float, word_bonus: float) -> None:
        import kenlm  # only processes that fuse load KenLM

        self._kenlm = kenlm
        self._model = model
        self._texts = token_texts
        self._weight = weight * LN10  # KenLM scores are log10
        self._word_bonus = word_bonus
        empty = kenlm.State()
        model.NullContextWrite(empty)
        self._start = _LmState(empty, "")
        self._unigrams: dict[str, float | None] = {}

    def initial(self) -> _LmState:
        return self._start

    def proposals(self, state: _LmState) -> tuple[int, ...]:
        return ()

    def _unigram(self, word: str) -> float | None:
        """log10 P(word) without context; None for a word outside the model's vocabulary."""
        if word not in self._unigrams:
            known = word in self._model
            self._unigrams[word] = self._model.BaseScore(self._start.context, word, self._kenlm.State()) if known else None
        return self._unigrams[word]

    def _complete(self, state: _LmState) -> tuple[float, object]:
        """Score the partial word (it may normalise to several words, or to none) after the context."""
        context, bonus = state.context, 0.0
        for word in normalize_words(state.partial):
            after = self._kenlm.State()
            log10 = self._model.BaseScore(context, word, after)
            unigram = self._unigram(word)
            bonus += self._weight * (0.0 if unigram is None else log10 - unigram) + self._word_bonus
            context = after
        return bonus, context

    def advance(self, state: _LmState, tokens: Sequence[int]) -> tuple[list[float], list[_LmState]]:
        bonuses: list[float] = []
        states: list[_LmState] = []
        completed: tuple[float, object] | None = None  # the same for every candidate that completes it
        for token in tokens:
            piece = self._texts[token] if token < len(self._texts) else ""
            if piece and not piece.startswith(" "):
                bonuses.append(0.0)
                states.append(_LmState(state.context, state.partial + piece))
                continue
            if completed is None:
                completed = self._complete(state)
            bonuses.append(completed[0])
            states.append(_LmState(completed[1], piece))
        return bonuses, states


@dataclass(frozen=True)
class _BoostState:
    matched: str  # lower-cased text of the boosted phrase followed so far ("" when none)
    credited: float  # what the match has been rewarded so far, taken back if it breaks off
    spelled: frozenset = frozenset()  # the phrases this hypothesis has spelled: a second spelling earns nothing
    paused: bool = False  # punctuation followed the match: only a restart of the term keeps its credit


class WordBoost:
    """Rewards hypotheses that spell one of a request's boosted words or phrases.

    Matching is on lower-cased text, not on token ids, so every tokenisation and casing of
    "Aligner" counts. Each token that extends a match earns `reward` per character (per token would
    favour spelling a term in many short tokens, which the model finds unlikely); a match that breaks off
    before its phrase ends gives its reward back, so a beam is drawn toward the phrase without
    keeping a false start, unless the speaker starts the term again (`_restart_credit`). A phrase is
    spelled, and keeps its reward, only where its last word ends (the next token begins with a space or
    punctuation, or the text ends): "albuterolast" gives back what "albuterol" earned, as spells_any reads
    it. A phrase earns its reward once per hypothesis: rewarded at every spelling, a
    beam learns to say it again ("Montreal forced aligner, aligner, aligner."), and once the text holds
    it the model's own context carries it. Once a match has begun, the tokens that would continue it are
    proposed as candidates even when the model ranks them below the beam's usual top-k: a misheard
    term's spelling is rarely among the model's first few choices, which is why the boost exists.
    """

    per_hypothesis = True  # Scorer: the final choice adds the reward, not divided by the hypothesis's length

    def __init__(self, phrases: Sequence[str], tokenizer: "WhisperTokenizer", reward: float) -> None:
        self._texts = tokenizer.token_texts
        self._by_text = tokenizer.tokens_by_lower_text
        self._reward = reward
        self._targets = frozenset(" " + " ".join(words) for words in map(normalize_words, phrases) if words)
        completions: dict[str, set[str]] = {}
        for target in self._targets:
            for i in range(2, len(target) + 1):
                completions.setdefault(target[:i], set()).add(target)
        self._completions = {prefix: frozenset(found) for prefix, found in completions.items()}
        # a phrase spelled also spells the boosted phrases inside it ("Montreal Forced Aligner": "aligner")
        # and their other forms ("forced alignment" for "forced aligner")
        inside = {t: [u for u in self._targets if (t + " ").find(u + " ") >= 0] for t in self._targets}
        by_start: dict[str, list[str]] = {}  # forms share at least their first two characters (" f")
        for target in self._targets:
            by_start.setdefault(target[:2], []).append(target)
        forms = {u: [v for v in by_start[u[:2]] if _forms_of_one(u, v)] for u in self._targets}
        self._covers = {t: frozenset(v for u in found for v in forms[u]) for t, found in inside.items()}
        self._continuations: dict[str, tuple[int, ...]] = {}
        self._none = _BoostState("", 0.0)

    def initial(self) -> _BoostState:
        return self._none

    def proposals(self, state: _BoostState) -> tuple[int, ...]:
        """Tokens that continue the phrase being matched (none when no match is under way)."""
        if not state.matched or state.paused:
            return ()
        found = self._continuations.get(state.matched)
        if found is None:
            ids: set[int] = set()
            for target in self._targets:
                if target.startswith(state.matched):
                    rest = target[len(state.matched):]
                    for end in range(1, len(rest) + 1):
                        ids.update(self._by_text.get(rest[:end], ()))
            found = self._continuations[state.matched] = tuple(sorted(ids))
        return found

    def _idle(self, state: _BoostState) -> _BoostState:
        return self._none if not state.spelled else _BoostState("", 0.0, state.spelled)

    def _open(self, prefix: str, spelled: frozenset) -> bool:
        """True when `prefix` begins a boosted phrase this hypothesis has not spelled yet."""
        found = self._completions.get(prefix)
        return found is not None and not found <= spelled

    def _follow(self, state: _BoostState, piece: str) -> tuple[float, _BoostState]:
        earned = self._reward * len(piece)
        if state.matched in self._targets and not piece[:1].isalnum():
            state = self._spelled(state)
        if state.matched and not any(c.isalnum() for c in piece):
            return 0.0, _BoostState(state.matched, state.credited, state.spelled, paused=True)
        if state.matched and not state.paused:
            extended = state.matched + piece
            if self._open(extended, state.spelled):
                return earned, _BoostState(extended, state.credited + earned, state.spelled)
        if piece.startswith(" ") and self._open(piece, state.spelled):
            kept = self._restart_credit(state, piece)
            return kept - state.credited + earned, _BoostState(piece, earned + kept, state.spelled)
        return -state.credited, self._idle(state)

    def _spelled(self, state: _BoostState) -> _BoostState:
        """The state once the phrase matched has ended with its word: spelled, its reward kept."""
        return _BoostState("", 0.0, state.spelled | self._covers[state.matched])

    def _restart_credit(self, state: _BoostState, piece: str) -> float:
        """What a broken-off match keeps when `piece` says part of it again ("Montreal forced, forced aligner"):
        its credit less the letters said twice, so a restarted term earns what the fluent one does, no more,
        and the model's own scores choose between them. Given back whole, the broken start left the restart
        behind, and the reward wrote a speaker's restart as the fluent term."""
        kept = 0.0
        for restarted in self._completions[piece] - state.spelled:
            for target in self._completions.get(state.matched, ()):
                at = target.find(restarted)
                if 0 <= at < len(state.matched):
                    kept = max(kept, state.credited - self._reward * (len(state.matched) - at))
        return kept

    def advance(self, state: _BoostState, tokens: Sequence[int]) -> tuple[list[float], list[_BoostState]]:
        bonuses: list[float] = []
        states: list[_BoostState] = []
        texts = self._texts
        for token in tokens:
            if token >= len(texts):  # a timestamp or the end: an unfinished match is given back
                done = state.matched in self._targets
                bonuses.append(0.0 if done else -state.credited)
                states.append(self._spelled(state) if done else self._idle(state))
                continue
            bonus, after = self._follow(state, lower_text(texts[token]))
            bonuses.append(bonus)
            states.append(after)
        return bonuses, states


def _forms_of_one(a: str, b: str) -> bool:
    """True when boosted phrases `a` and `b` (as WordBoost keeps them) are one term, or forms of one."""
    return len(os.path.commonprefix((a, b))) >= SAME_TERM_SHARE * min(len(a), len(b))


@lru_cache(maxsize=64)
def word_boost(phrases: tuple[str, ...], tokenizer: "WhisperTokenizer", strength: str) -> WordBoost:
    """One WordBoost per distinct request setting, shared by that request's windows (and later requests')."""
    return WordBoost(phrases, tokenizer, BOOST_REWARD[strength])


def language_model_terms(settings: "EngineSettings", tokenizer: "WhisperTokenizer") -> "DomainTerms | None":
    """The rare terms `lm build` wrote beside CUSTOM_LANG_MODEL_PATH, for the recheck; None without them."""
    if settings.language_model is None:
        return None
    from engine.lm.domain_terms import load_domain_terms

    return load_domain_terms(settings.language_model, tokenizer)


def language_model_scorers(settings: "EngineSettings", tokenizer: "WhisperTokenizer") -> tuple[LanguageModelFusion, ...]:
    """The fusion scorer of CUSTOM_LANG_MODEL_PATH, loaded (memory-mapped) once per process; () without one."""
    if settings.language_model is None:
        return ()
    from engine.lm.toolkit import load_language_model

    model = load_language_model(settings.language_model)
    return (LanguageModelFusion(model, tokenizer.token_texts, settings.lm_weight, settings.lm_word_bonus),)
