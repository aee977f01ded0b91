"""Decoder-side search for one 30 s window: handed each row's best candidates, it chooses the next tokens.

It never touches the network, nor a whole logits row. Each call to `advance` receives one reduced
row per live hypothesis (engine/decoding/reduce.py: the K best tokens under Whisper's rules with
their log-probabilities, the log-probabilities of tokens it asked for by id, the no-speech
probability) and answers with the tokens to feed next and, for beam search, the parent row each new
row continues from (the inference side reorders its caches accordingly). `rules` then says what
the inference side must know of each row to reduce the next step: the rules' column bounds
(engine/decoding/rules.py), the sampling keys, the tokens the scorers propose. This is the seam
between the inference process and the decoder processes.

Whisper's rules (openai/whisper decoding.py, faster-whisper) are engine/decoding/rules.py's:
suppressed tokens, blank suppression at the start, timestamp pairing and monotonicity, a cap on the
first timestamp, no timestamp past the window's audio, the timestamp-mass rule, plus a repetition
guard. The config's scorers add to the ranking of beam candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.decoding.reduce import HEAD, MAX_REQUESTED, NO_SPEECH, RAW_SHIFT, RowRules, StepReducer, sampling_key
from engine.decoding.rules import SECONDS_PER_TIMESTAMP, Scorer, repeated_tail, row_bounds
from engine.model.encoder_width import shortens_windows
from engine.text.tokenizer import WhisperTokenizer

if TYPE_CHECKING:
    from engine.lm.domain_terms import DomainTerms


@dataclass(frozen=True)
class SearchConfig:
    """Everything the rules need, taken once from the tokenizer and the model configuration."""

    beam_size: int
    sot_sequence: tuple[int, ...]
    eot: int
    no_speech: int
    timestamp_begin: int
    suppress: tuple[int, ...]
    suppress_begin: tuple[int, ...]
    max_tokens: int = 224  # sampled tokens a window may have (openai/whisper's sample_len: n_text_ctx / 2)
    text_context: int = 448  # positions the decoder attends over: prompt, SOT sequence and text together
    max_initial_timestamp: float = 1.0
    best_of: int = 5  # rows sampled per window at a fallback temperature
    scorers: tuple[Scorer, ...] = ()  # every window's bonuses on beam candidates' ranking (language model)
    domain_terms: "DomainTerms | None" = None  # the language model's rare terms: a window nearly spelling one is rechecked
    # The runtime shortens windows (engine/model/encoder_width.py): a shortened window whose text says a phrase twice
    # back to back is decoded again whole (engine/decoding/window.py).
    redo_repeats_whole: bool = False

    @classmethod
    def for_model(cls, tokenizer: WhisperTokenizer, model_config: dict, beam_size: int,
                  scorers: tuple[Scorer, ...] = (), domain_terms: "DomainTerms | None" = None,
                  device: str = "cpu") -> "SearchConfig":
        """`device`: where the windows are encoded (its runtime may shorten them)."""
        suppress = sorted(set(model_config["suppress_ids"]) | set(tokenizer.non_speech_specials))
        if max(model_config["suppress_ids_begin"]) >= tokenizer.timestamp_begin:
            raise ValueError("the first token's suppressed tokens must be text or specials (rules.row_bounds)")
        return cls(
            redo_repeats_whole=shortens_windows(device),
            scorers=scorers,
            domain_terms=domain_terms,
            beam_size=beam_size,
            sot_sequence=tokenizer.sot_sequence,
            eot=tokenizer.eot,
            no_speech=tokenizer.no_speech,
            timestamp_begin=tokenizer.timestamp_begin,
            suppress=tuple(suppress),
            suppress_begin=tuple(model_config["suppress_ids_begin"]),
            max_tokens=model_config["dims"]["n_text_ctx"] // 2,
            text_context=model_config["dims"]["n_text_ctx"],
        )

    @property
    def candidates(self) -> int:
        """Candidates a reduced row carries: beam + 1 is all a plain beam can keep (openai/whisper's top-k);
        twice the beam leaves a language model or a boosted word room to rerank."""
        return 2 * self.beam_size

    def reducer(self, n_vocab: int, device: torch.device | str) -> StepReducer:
        """The inference side's half of this search's steps, on `device`."""
        return StepReducer(self.suppress, self.no_speech, self.timestamp_begin, self.candidates, n_vocab, device)


@dataclass
class Hypothesis:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # unfiltered model log-probability of each token
    score: float = 0.0  # sum of filtered log-probabilities: Whisper's avg_logprob, the fallback's test
    bonus: float = 0.0  # sum of the scorers' bonuses; the beam ranks by score + bonus
    states: tuple = ()  # one per scorer (Scorer.advance)
    whole: float = 0.0  # the part of `bonus` that rewards the hypothesis as a whole (Scorer.per_hypothesis)

    def extended(self, token: int, logprob: float, score: float, bonus: float = 0.0,
                 states: tuple = (), whole: float = 0.0) -> "Hypothesis":
        return Hypothesis(self.tokens + [token], self.logprobs + [logprob], score, self.bonus + bonus, states,
                          self.whole + whole)

    @property
    def rank(self) -> float:
        return self.score + self.bonus

    @property
    def final_rank(self) -> float:
        """openai/whisper's length-normalised score, with a reward for the whole hypothesis added after:
        divided by the length, a boosted phrase's reward would make every hypothesis that spells it
        prefer to end early ("here's some more word." for "... word, word, word, word")."""
        return (self.rank - self.whole) / max(1, len(self.tokens)) + self.whole


@dataclass
class SearchResult:
    tokens: list[int]  # sampled tokens, timestamps included, no eot
    token_logprobs: list[float]
    avg_logprob: float
    no_speech_prob: float
    complete_tokens: int  # tokens[:complete_tokens] end with a closed segment
    complete_seconds: float | None  # where that segment closes, when text follows it unclosed

    def without_unfinished_tail(self) -> "SearchResult":
        """Drop the unclosed last segment, which a later window starting at complete_seconds redoes."""
        n = self.complete_tokens
        return SearchResult(self.tokens[:n], self.token_logprobs[:n], self.avg_logprob, self.no_speech_prob, n, None)


class WindowSearch:
    """Search over one window, driven by logits rows.

    At temperature 0 it is beam search (greedy at width 1); above 0 it samples `best_of`
    independent rows, which is Whisper's fallback for windows whose beam result looks wrong.
    `prompt` is what the decoder reads before the SOT sequence (DecodeOptions.prompt_tokens):
    it conditions every row and is never part of the result. `scorers` are this window's own
    (a request's boosted words), ranked beside the config's; sampling ignores scorers.
    """

    def __init__(self, config: SearchConfig, audio_seconds: float, temperature: float = 0.0, seed: int = 0,
                 prompt: tuple[int, ...] = (), scorers: tuple[Scorer, ...] = ()) -> None:
        self.cfg = config
        self.scorers = (*config.scorers, *scorers) if temperature == 0 else ()
        self._per_hypothesis = [getattr(s, "per_hypothesis", False) for s in self.scorers]
        self.temperature = temperature
        self._prompt = prompt
        # A beam starts from one row, its only hypothesis, and widens to beam_size rows at its first token
        # (which copy that row's cache): the prompt is prefilled once, not once per beam row.
        self.rows = 1 if temperature == 0 else config.best_of
        # openai/whisper stops a sample that would overflow the text context; a long prompt leaves less room
        self.max_tokens = min(config.max_tokens, config.text_context - len(prompt) - len(config.sot_sequence))
        self._sot_fed = 0
        self._seed = seed
        self._steps = 0
        tb = config.timestamp_begin
        self._last_timestamp = tb + int(round(min(audio_seconds, 30.0) / SECONDS_PER_TIMESTAMP))
        self._first_last_timestamp = tb + int(round(config.max_initial_timestamp / SECONDS_PER_TIMESTAMP))
        self._requested: list[tuple[int, ...]] = []  # per live row: the scorers' proposals asked for this step
        start = Hypothesis(states=tuple(s.initial() for s in self.scorers))
        self._live = [start] if temperature == 0 else [Hypothesis() for _ in range(self.rows)]
        self._finished: list[Hypothesis] = []
        self.no_speech_prob = 0.0
        self.done = False

    def first_tokens(self) -> list[int | tuple[int, ...]]:
        """The first feed of each row: the start token, preceded by the prompt when there is one.

        A prompt goes in as one multi-token feed (the runtime prefills it in a single step) ending
        at the start token, so the first logits are still those where <|nospeech|> is read. A beam
        has one row here, whatever its width; sampling has best_of (each row draws its own tokens).
        """
        first = self.cfg.sot_sequence[0]
        return [(*self._prompt, first) if self._prompt else first] * self.rows

    def rules(self) -> RowRules:
        """What the inference side must know to reduce the next step of the rows just fed (first_tokens'
        or advance's): each row's rule bounds and sampling key, and the scorers' proposals."""
        cfg = self.cfg
        bounds = [row_bounds(h.tokens, cfg.eot, cfg.timestamp_begin, self._last_timestamp, self._first_last_timestamp)
                  for h in self._live]
        self._requested = [self._proposals(h) for h in self._live] if self.scorers else []
        padding = self.rows - len(bounds)  # a beam's rows past its live hypotheses copy row 0
        return RowRules(
            bounds=np.asarray(bounds + bounds[:1] * padding, dtype=np.int64),
            temperature=self.temperature,
            keys=tuple(sampling_key(self._seed, self._steps, row) for row in range(self.rows))
            if self.temperature > 0 else (),
            requested=tuple(self._requested),
        )

    def _proposals(self, hyp: Hypothesis) -> tuple[int, ...]:
        proposed: dict[int, None] = {}
        for scorer, state in zip(self.scorers, hyp.states):
            proposed.update(dict.fromkeys(scorer.proposals(state)))
        return tuple(proposed)[:MAX_REQUESTED]

    def advance(self, step: np.ndarray) -> tuple[list[int], list[int]]:
        """Consume one reduced row per row (reduce.StepReducer); return the next tokens and the parent row of each.

        The rows that follow are exactly the returned ones: fewer rows than before means the
        others ended, and a parent that is not the row's own index means its cache is copied.
        """
        self._steps += 1
        if self._sot_fed < len(self.cfg.sot_sequence):
            if self._sot_fed == 0:
                self.no_speech_prob = float(np.exp(step[0, NO_SPEECH]))
            self._sot_fed += 1
            if self._sot_fed < len(self.cfg.sot_sequence):
                return [self.cfg.sot_sequence[self._sot_fed]] * self.rows, list(range(self.rows))
        block = step[: len(self._live)]
        return self._continue_with(self._beam_step(block) if self.temperature == 0 else self._sample_step(block))

    def _continue_with(self, kept: list[tuple[int, Hypothesis]]) -> tuple[list[int], list[int]]:
        """The step's kept hypotheses (with their parent rows) become the live rows; what they are fed next."""
        self._live = [hyp for _, hyp in kept]
        longest = max((len(h.tokens) for h in self._live), default=0)
        enough = self.temperature == 0 and len(self._finished) >= self.cfg.beam_size
        if enough or not self._live or longest >= self.max_tokens:
            self.done = True
            return [], []
        parents = [row for row, _ in kept]
        tokens = [hyp.tokens[-1] for _, hyp in kept]
        if self.temperature == 0:  # a beam keeps its full width even when fewer candidates survive
            parents += [parents[0]] * (self.cfg.beam_size - len(parents))
            tokens += [tokens[0]] * (self.cfg.beam_size - len(tokens))
        self.rows = len(parents)
        return tokens, parents

    def _beam_step(self, block: np.ndarray) -> list[tuple[int, Hypothesis]]:
        k = self.cfg.candidates
        ids = block[:, HEAD : HEAD + k].astype(np.int64)
        candidates: list[tuple[float, int, int, float, tuple, float]] = []
        for row, hyp in enumerate(self._live):
            tokens = ids[row].tolist()
            logprobs = block[row, HEAD + k : HEAD + 2 * k].tolist()
            if self._requested:
                top = set(tokens)
                extra = [(t, lp) for t, lp in zip(self._requested[row], block[row, HEAD + 2 * k :].tolist())
                         if t not in top]
                tokens += [t for t, _ in extra]
                logprobs += [lp for _, lp in extra]
            bonus, whole, states = self._score(hyp, tokens)
            shift = float(block[row, RAW_SHIFT])
            for i, (token, logprob) in enumerate(zip(tokens, logprobs)):
                if logprob != float("-inf"):
                    extra_bonus = bonus[i] if bonus else 0.0
                    after = tuple(s[i] for s in states)
                    candidates.append((hyp.score + logprob, row, token, extra_bonus, after, logprob + shift,
                                       whole[i] if whole else 0.0))
        candidates.sort(key=lambda c: -(c[0] + self._live[c[1]].bonus + c[3]))
        kept: list[tuple[int, Hypothesis]] = []
        for score, row, token, extra_bonus, after, raw, extra_whole in candidates:
            hyp = self._live[row].extended(token, raw, score, extra_bonus, after, extra_whole)
            if token == self.cfg.eot:
                if len(self._finished) < self.cfg.beam_size:
                    self._finished.append(hyp)
            else:
                kept.append((row, hyp))
                if len(kept) == self.cfg.beam_size:
                    break
        return kept

    def _score(self, hyp: Hypothesis, tokens: list[int]) -> tuple[list[float], list[float], list[list[object]]]:
        """Per candidate token: the scorers' summed bonus, the part of it from per-hypothesis scorers,
        and each scorer's next states ([], [], [] without scorers)."""
        if not self.scorers:  # the hot path builds nothing
            return [], [], []
        total = [0.0] * len(tokens)
        whole = [0.0] * len(tokens)
        states = []
        for scorer, state, per_hypothesis in zip(self.scorers, hyp.states, self._per_hypothesis):
            bonus, after = scorer.advance(state, tokens)
            total = [t + b for t, b in zip(total, bonus)]
            if per_hypothesis:
                whole = [w + b for w, b in zip(whole, bonus)]
            states.append(after)
        return total, whole, states

    def _sample_step(self, block: np.ndarray) -> list[tuple[int, Hypothesis]]:
        """Each row's draw from softmax(logits / T), made on the inference side (reduce.StepReducer)."""
        k = self.cfg.candidates
        kept: list[tuple[int, Hypothesis]] = []
        for row, hyp in enumerate(self._live):
            token, logprob = int(block[row, HEAD]), float(block[row, HEAD + k])
            extended = hyp.extended(token, logprob + float(block[row, RAW_SHIFT]), hyp.score + logprob)
            if token == self.cfg.eot:
                self._finished.append(extended)
            else:
                kept.append((row, extended))
        return kept

    def result(self) -> SearchResult:
        """The best hypothesis by length-normalised log-probability, as openai/whisper ranks them."""
        pool = self._finished or self._live
        best = max(pool, key=lambda h: h.final_rank)
        tokens, logprobs = best.tokens, best.logprobs
        if tokens and tokens[-1] == self.cfg.eot:
            tokens, logprobs = tokens[:-1], logprobs[:-1]
        text_positions = [i for i, t in enumerate(tokens) if t < self.cfg.eot]
        loop = repeated_tail([tokens[i] for i in text_positions])
        if loop:
            cut = text_positions[len(text_positions) - loop]
            tokens, logprobs = tokens[:cut], logprobs[:cut]
        complete_tokens, complete_seconds = self._last_closed_segment(tokens)
        return SearchResult(
            tokens=tokens,
            token_logprobs=logprobs,
            # The fallback's confidence test: scorers choose what the model finds less likely on purpose,
            # so their net reward counts toward it; a net cost (an LM's) does not condemn the model's text.
            avg_logprob=(best.score + max(0.0, best.bonus)) / max(1, len(best.tokens)),
            no_speech_prob=self.no_speech_prob,
            complete_tokens=complete_tokens,
            complete_seconds=complete_seconds,
        )

    def _last_closed_segment(self, tokens: list[int]) -> tuple[int, float | None]:
        """Whisper's seek rule: after the last pair of timestamps, a segment was opened, not closed.

        A window whose speech runs past what the model managed to transcribe ends that way (with
        text or with the pair itself); openai's transcribe seeks back to the last closing timestamp
        and decodes the rest again. Ending on a single timestamp means the window is done.
        """
        tb = self.cfg.timestamp_begin
        stamp = [t >= tb for t in tokens]
        if len(tokens) >= 2 and stamp[-2:] == [False, True]:
            return len(tokens), None
        pairs = [i for i in range(1, len(tokens)) if stamp[i] and stamp[i - 1]]
        if not pairs:
            return len(tokens), None
        return pairs[-1], (tokens[pairs[-1] - 1] - tb) * SECONDS_PER_TIMESTAMP
