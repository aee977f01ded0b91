"""In-process composition of the inference runtime and the decoder-side search.

The CLI, the benchmarks and the tests transcribe through this class. It drives the same pieces the
daemon spreads over processes: voice-activity windows, a batched encoder, one decoder step per
iteration for every live row of every window in flight (from one file or many), window searches,
and the alignment pass that yields word timings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from engine.alignment import word_timings
from engine.audio import SAMPLE_RATE
from engine.features import WINDOW_SAMPLES, log_mel_windows
from engine.inference import InferenceRuntime
from engine.model_store import StoredModel, load_stored_model
from engine.result import Transcript, Word
from engine.fallback import WindowDecode, is_silence
from engine.search import SearchConfig
from engine.settings import DEFAULT_BEAM_SIZE, EngineSettings
from engine.tokenizer import WhisperTokenizer
from engine.vad import SpeechWindow, VoiceActivityDetector

MIN_REDO_SECONDS = 1.0  # an unfinished tail shorter than this is kept rather than decoded again


@dataclass
class _WindowTask:
    file: int
    span: SpeechWindow


@dataclass
class _ActiveWindow:
    task: _WindowTask
    decode: WindowDecode
    handle: int
    sequences: list[int]
    feed: list[int] = field(default_factory=list)


class Transcriber:
    def __init__(self, model: StoredModel, beam_size: int, device: str = "cpu", int8: bool = False,
                 windows_in_flight: int = 16) -> None:
        self.runtime = InferenceRuntime(model, device, int8=int8)
        self.tokenizer = WhisperTokenizer(model.path / "tokenizer.json", model.dims.n_vocab)
        self.search_config = SearchConfig.for_model(self.tokenizer, model.config, beam_size)
        self.vad = VoiceActivityDetector()
        self.n_mels = model.dims.n_mels
        self.windows_in_flight = windows_in_flight

    @classmethod
    def load(cls, model: str | None = None, beam_size: int | None = None,
             settings: EngineSettings | None = None) -> "Transcriber":
        """Load an installed model; what the arguments leave open comes from the environment."""
        settings = settings or EngineSettings.from_env()
        name = model or settings.model
        dtype = {"float16": torch.float16}.get(settings.compute_type, torch.float32)
        stored = load_stored_model(settings.models_dir, name, settings.device, dtype)
        beam = beam_size or (settings.beam_size if name == settings.model else DEFAULT_BEAM_SIZE[name])
        return cls(stored, beam, settings.device, int8=settings.compute_type == "int8")

    def transcribe(self, audio: np.ndarray, progress: Callable[[int, int], None] | None = None) -> Transcript:
        return self.transcribe_many([audio], progress)[0]

    def transcribe_many(self, audios: Sequence[np.ndarray],
                        progress: Callable[[int, int], None] | None = None) -> list[Transcript]:
        """Transcribe 16 kHz mono files together, windows of all files sharing every decoder step.

        `progress(done, total)` is called as windows finish.
        """
        tasks = deque(_WindowTask(i, span) for i, audio in enumerate(audios) for span in self.vad.windows(audio))
        total = len(tasks)
        words: list[list[Word]] = [[] for _ in audios]
        active: list[_ActiveWindow] = []
        done = 0
        while tasks or active:
            room = self.windows_in_flight - len(active)
            if tasks and room > 0:
                batch = [tasks.popleft() for _ in range(min(room, len(tasks)))]
                active.extend(self._start(batch, audios))
            finished = self._step(active)
            for window in finished:
                active.remove(window)
            found, redo = self._finish(finished)
            for window, window_words in zip(finished, found):
                words[window.task.file].extend(window_words)
            tasks.extendleft(redo)
            total += len(redo)
            done += len(finished)
            if progress and finished:
                progress(done, total)
        return [
            Transcript(sorted(w, key=lambda x: (x.start_ms, x.end_ms)), len(a) / SAMPLE_RATE)
            for w, a in zip(words, audios)
        ]

    def _start(self, batch: list[_WindowTask], audios: Sequence[np.ndarray]) -> list[_ActiveWindow]:
        chunks = [audios[t.file][t.span.start : min(t.span.end, t.span.start + WINDOW_SAMPLES)] for t in batch]
        handles = self.runtime.encode(log_mel_windows(chunks, self.n_mels))
        started = []
        for task, chunk, handle in zip(batch, chunks, handles):
            decode = WindowDecode(self.search_config, self.tokenizer, len(chunk) / SAMPLE_RATE)
            sequences = self.runtime.open_sequences(handle, decode.search.rows)
            started.append(_ActiveWindow(task, decode, handle, sequences, decode.search.first_tokens()))
        return started

    def _step(self, active: list[_ActiveWindow]) -> list[_ActiveWindow]:
        """One decoder step for every row in flight; returns the windows whose search ended."""
        logits = self.runtime.step(
            [s for w in active for s in w.sequences], [t for w in active for t in w.feed]
        )
        finished = []
        row = 0
        for window in active:
            rows = logits[row : row + len(window.sequences)]
            row += len(window.sequences)
            tokens, parents = window.decode.search.advance(rows)
            if window.decode.search.done:
                self.runtime.close_sequences(window.sequences)
                again = window.decode.retry()
                if again is None:
                    finished.append(window)
                else:
                    window.sequences = self.runtime.open_sequences(window.handle, again.rows)
                    window.feed = again.first_tokens()
                continue
            kept = window.sequences[: len(parents)]
            if parents != list(range(len(parents))):
                self.runtime.reorder(kept, [window.sequences[p] for p in parents])
            self.runtime.close_sequences(window.sequences[len(parents) :])
            window.sequences, window.feed = kept, tokens
        return finished

    def _finish(self, finished: list[_ActiveWindow]) -> tuple[list[list[Word]], list[_WindowTask]]:
        """Align finished windows in one batch and turn their tokens into timed words.

        Also returns the windows to decode again: the audio after a segment the model left open.
        """
        results = []
        redo = []
        for window in finished:
            result = window.decode.result()
            span = window.task.span
            if result.complete_seconds is not None:
                resume = span.start + int(result.complete_seconds * SAMPLE_RATE)
                if (span.end - resume) / SAMPLE_RATE >= MIN_REDO_SECONDS:
                    result = result.without_unfinished_tail()
                    redo.append(_WindowTask(window.task.file, SpeechWindow(resume, span.end)))
            results.append(result)
        eot = self.tokenizer.eot
        texts = [
            [] if is_silence(r) else [t for t in r.tokens if t < eot] for r in results
        ]
        requests = [
            (w.handle, [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps, *text, eot])
            for w, text in zip(finished, texts) if text
        ]
        scores = iter(self.runtime.alignment_scores(requests))
        out: list[list[Word]] = []
        for window, result, text in zip(finished, results, texts):
            self.runtime.release_window(window.handle)
            if not text:
                out.append([])
                continue
            logprobs = [lp for t, lp in zip(result.tokens, result.token_logprobs) if t < eot]
            span = window.task.span
            timings = word_timings(self.tokenizer, next(scores), text, logprobs, min(span.end - span.start, WINDOW_SAMPLES))
            offset_ms = span.start * 1000 / SAMPLE_RATE
            out.append([
                Word(
                    text=t.text.strip(),
                    start_ms=int(round(offset_ms + t.start * 1000)),
                    end_ms=max(int(round(offset_ms + t.end * 1000)), int(round(offset_ms + t.start * 1000)) + 1),
                    confidence=round(min(1.0, max(0.0, t.probability)), 4),
                )
                for t in timings if t.text.strip()
            ])
        return out, redo
