"""In-process composition of the inference runtime and the decoder-side search.

The CLI, the benchmarks and the tests transcribe through this class. It drives the same pieces the
daemon spreads over processes: voice-activity windows, a batched encoder, one decoder step per
iteration for every live row of every window in flight (from one file or many), window searches,
and the alignment pass that yields word timings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from engine.audio.files import SAMPLE_RATE
from engine.decoding.loop import Align, Feed, Instruction, apply_instruction, next_instruction
from engine.decoding.options import DecodeOptions
from engine.decoding.reduce import RowRules
from engine.audio.features import log_mel_windows
from engine.lm.fusion import language_model_scorers, language_model_terms
from engine.model.runtime import InferenceRuntime
from engine.model.store import StoredModel, load_stored_model
from engine.result import Transcript, Word
from engine.decoding.search import SearchConfig
from engine.settings import DEFAULT_BEAM_SIZE, EngineSettings
from engine.text.tokenizer import WhisperTokenizer
from engine.audio.speech_window import SpeechWindow
from engine.audio.vad import VoiceActivityDetector
from engine.decoding.window import WindowJob

@dataclass
class _ActiveWindow:
    file: int
    job: WindowJob
    handle: int
    sequences: list[int]
    feed: Feed | None  # None once the window's search has ended
    rules: RowRules | None  # what its next step is reduced with


class Transcriber:
    def __init__(self, model: StoredModel, beam_size: int, device: str = "cpu", int8: bool = False,
                 windows_in_flight: int = 16, settings: EngineSettings | None = None, bf16: bool = False) -> None:
        """`settings` brings the language model to fuse (CUSTOM_LANG_MODEL_PATH and its weights), if any, and
        ASYNC_ENGINE_CUDA_GRAPHS."""
        self.runtime = InferenceRuntime(model, device, int8=int8, step_graphs=bool(settings and settings.cuda_graphs),
                                        bf16=bf16)
        self.tokenizer = WhisperTokenizer(model.path / "tokenizer.json", model.dims.n_vocab)
        scorers = language_model_scorers(settings, self.tokenizer) if settings else ()
        terms = language_model_terms(settings, self.tokenizer) if settings else None
        self.search_config = SearchConfig.for_model(self.tokenizer, model.config, beam_size, scorers, terms, device)
        self.reducer = self.search_config.reducer(model.dims.n_vocab, device)
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
        return cls(stored, beam, settings.device, int8=settings.compute_type == "int8", settings=settings,
                   bf16=settings.compute_type == "bfloat16")

    def transcribe(self, audio: np.ndarray, progress: Callable[[int, int], None] | None = None,
                   options: DecodeOptions = DecodeOptions()) -> Transcript:
        return self.transcribe_many([audio], progress, options)[0]

    def transcribe_many(self, audios: Sequence[np.ndarray], progress: Callable[[int, int], None] | None = None,
                        options: DecodeOptions = DecodeOptions(), dual_channel: bool = False) -> list[Transcript]:
        """Transcribe 16 kHz mono files together, windows of all files sharing every decoder step.

        `progress(done, total)` is called as windows finish. `options` apply to every window.
        `dual_channel`: the audios are the sides of one call (VoiceActivityDetector.windows' call_channel).
        """
        tasks = deque((i, span) for i, audio in enumerate(audios)
                      for span in self.vad.windows(audio, call_channel=dual_channel))
        speech = [[] for _ in audios]
        for file, span in tasks:
            speech[file] += span.speech_ms()
        total = len(tasks)
        words: list[list[Word]] = [[] for _ in audios]
        redecoded = [0] * len(audios)
        active: list[_ActiveWindow] = []
        done = 0
        while tasks or active:
            room = self.windows_in_flight - len(active)
            if tasks and room > 0:
                batch = [tasks.popleft() for _ in range(min(room, len(tasks)))]
                active.extend(self._start(batch, audios, options))
            ended = self._step(active)
            for window, _ in ended:
                active.remove(window)
            found, redo = self._finish(ended)
            for (window, _), window_words in zip(ended, found):
                words[window.file].extend(window_words)
            tasks.extendleft(redo)
            for file, span in redo:
                redecoded[file] += span.encode_whole
            total += len(redo)
            done += len(ended)
            if progress and ended:
                progress(done, total)
        return [
            Transcript(sorted(w, key=lambda x: (x.start_ms, x.end_ms)), len(a) / SAMPLE_RATE, again, heard)
            for w, a, again, heard in zip(words, audios, redecoded, speech)
        ]

    def _start(self, batch: list[tuple[int, SpeechWindow]], audios: Sequence[np.ndarray],
               options: DecodeOptions) -> list[_ActiveWindow]:
        jobs = [WindowJob(self.search_config, self.tokenizer, span, options) for _, span in batch]
        chunks = [job.span.gather(audios[file]) for (file, _), job in zip(batch, jobs)]
        handles = self.runtime.encode(log_mel_windows(chunks, self.n_mels),
                                      [job.span.encoded_samples() for job in jobs])
        started = []
        for (file, _), job, handle in zip(batch, jobs, handles):
            sequences = self.runtime.open_sequences(handle, job.decode.search.rows)
            search = job.decode.search
            started.append(_ActiveWindow(file, job, handle, sequences, search.first_tokens(), search.rules()))
        return started

    def _step(self, active: list[_ActiveWindow]) -> list[tuple[_ActiveWindow, Instruction]]:
        """One decoder step for every row in flight; returns the windows whose search ended."""
        logits = self.runtime.step_logits(
            [s for w in active for s in w.sequences], [t for w in active for t in w.feed]
        )
        reduced = self.reducer.reduce(logits, [w.rules for w in active])
        ended = []
        for window, rows in zip(active, reduced):
            instruction = next_instruction(window.job, rows)
            window.sequences, window.feed, window.rules = apply_instruction(self.runtime, window.handle,
                                                                            window.sequences, instruction)
            if window.feed is None:
                ended.append((window, instruction))
        return ended

    def _finish(self, ended: list[tuple[_ActiveWindow, Instruction]]) -> tuple[list[list[Word]], list[tuple[int, SpeechWindow]]]:
        """Align the windows whose search found text in one batch and turn their tokens into timed words.

        Also returns the windows to decode again: the audio after a segment the model left open.
        """
        redo = [(window.file, window.job.redo) for window, _ in ended if window.job.redo is not None]
        aligned = [(window, instruction.tokens) for window, instruction in ended if isinstance(instruction, Align)]
        scores = dict(zip(
            (id(window) for window, _ in aligned),
            self.runtime.alignment_scores([(window.handle, tokens) for window, tokens in aligned]),
        ))
        words = []
        for window, _ in ended:
            self.runtime.release_window(window.handle)
            words.append(window.job.words(scores[id(window)]) if id(window) in scores else [])
        return words, redo
