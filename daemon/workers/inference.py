"""Inference process: one per device, running the network for every window of every job.

Each round it takes in what the decoders sent (new windows, next tokens, restarts, alignment
requests, releases), encodes new windows in one batch, runs the alignment passes, then advances
every window that has its next tokens in ONE decoder step (continuous batching across jobs), and
reduces each row's logits where they were made (engine/decoding/reduce.py: Whisper's rules, the
best candidates, the log-probabilities the decoders asked for) and writes only those, a few dozen
floats a row, into its shared-memory block for the decoders to read.
"""

from __future__ import annotations

import logging
import os
import queue
from collections import defaultdict, deque
from dataclasses import dataclass
from multiprocessing.queues import Queue

import numpy as np
import torch

from daemon import logs
from daemon.workers import messages as m
from daemon.workers.lifeline import Heartbeat, ignore_stop_signals
from daemon.malloc import release_free_memory
from daemon.workers.shm import Attachments, BlockGone, OwnedBlock
from engine.decoding.loop import Align, apply_instruction
from engine.decoding.reduce import MAX_REQUESTED, RowRules, step_width
from engine.audio.features import log_mel_windows
from engine.audio.files import SAMPLE_RATE
from engine.model.runtime import InferenceRuntime
from engine.model.store import load_stored_model
from engine.text.tokenizer import WhisperTokenizer
from engine.decoding.search import SearchConfig, WindowSearch
from engine.settings import EngineSettings

log = logging.getLogger("async_engine.inference")


@dataclass
class _Window:
    decoder: int
    handle: int
    frames: int  # encoder frames that hold audio
    sequences: list[int]
    feed: list[int] | None
    rules: RowRules | None  # what its next step is reduced with
    priority: int = m.FILE


class InferenceWorker:
    def __init__(self, index: int, device: str, settings: EngineSettings, windows_in_flight: int,
                 stream_slots: int, inbox: Queue, events: Queue, decoder_inboxes: list[Queue], prefix: str,
                 heartbeat: Heartbeat) -> None:
        self.index = index
        self.heartbeat = heartbeat
        self.inbox = inbox
        self.events = events
        self.decoder_inboxes = decoder_inboxes
        # Files' windows fill `capacity`; live streams' turns (m.TURN, m.TURN_END) may also take `stream_slots`
        # more, so a busy file load never makes a turn wait for a file's window to finish.
        self.capacity = windows_in_flight
        self.stream_slots = stream_slots
        slots = windows_in_flight + stream_slots
        dtype = {"float16": torch.float16}.get(settings.compute_type, torch.float32)
        model = load_stored_model(settings.models_dir, settings.model, device, dtype)
        self.runtime = InferenceRuntime(model, device, int8=settings.compute_type == "int8",
                                        step_graphs=settings.cuda_graphs, bf16=settings.compute_type == "bfloat16")
        self.n_mels = model.dims.n_mels
        self.max_rows = max(settings.beam_size, SearchConfig.best_of)
        tokenizer = WhisperTokenizer(model.path / "tokenizer.json", model.dims.n_vocab)
        search = SearchConfig.for_model(tokenizer, model.config, settings.beam_size, device=device)
        self.reducer = search.reducer(model.dims.n_vocab, device)
        self.row_bytes = step_width(search.candidates, MAX_REQUESTED) * 4  # a reduced row at its widest
        self.runtime.reserve(slots, self.max_rows)
        self.heads = len(model.config["alignment_heads"])
        self.align_slot = self.heads * model.dims.n_text_ctx * model.dims.n_audio_ctx * 4
        name = f"{prefix}inf{index}_{os.getpid()}"
        self.steps = OwnedBlock(name + "_steps", slots * self.max_rows * self.row_bytes)
        self.scores = OwnedBlock(name + "_align", slots * self.align_slot)
        self.pcm = Attachments()
        self.windows: dict[int, _Window] = {}
        self.opening: deque[m.Open] = deque()
        self.aligning: list[tuple[int, list[int]]] = []
        self._warm_up(search)

    def _warm_up(self, search: SearchConfig) -> None:
        """Pay each first-time cost of serving before the probe is answered (before /health says 200).

        The first encode, step, reduction and alignment of a process pay for kernel selection, weight
        packing and page faults; a request that met them paid them, so the first requests after a
        start were slower than later ones. Two windows of faint noise (one shortened, one whole) go
        through every kind of call serving makes: encode, a beam's steps and a sampled row's, the
        reduction, the alignment pass; then every row and window is released.
        """
        rng = np.random.default_rng(0)
        audio = [rng.normal(0, 1e-3, seconds * SAMPLE_RATE).astype(np.float32) for seconds in (4, 30)]
        handles = self.runtime.encode(log_mel_windows(audio, self.n_mels), [len(a) for a in audio])
        first = search.sot_sequence[0]
        for temperature in (0.0, 0.5):  # a beam's rows and a sampled window's, with the search's own first rules
            rules = WindowSearch(search, 30.0, temperature).rules()
            rows = [self.runtime.open_sequences(h, rules.rows) for h in handles]
            sequences = [s for r in rows for s in r]
            for _ in range(3):
                logits = self.runtime.step_logits(sequences, [first] * len(sequences))
                self.reducer.reduce(logits, [rules] * len(handles))
            for r in rows:
                self.runtime.close_sequences(r)
        self.runtime.alignment_scores([(h, [*search.sot_sequence, first, search.eot]) for h in handles])
        for h in handles:
            self.runtime.release_window(h)

    def run(self) -> None:
        parent = os.getppid()
        worked = False  # since memory was last released
        while os.getppid() == parent:  # once the supervisor is gone, nobody reads our answers
            self.heartbeat.beat()
            received = self._receive()
            if not received and worked and not (self.windows or self.opening):  # a second with nothing to do
                release_free_memory()
                worked = False
            worked = worked or bool(received)
            for message in received:
                if isinstance(message, m.Stop):
                    return
                self._handle(message)
            outgoing: dict[int, list] = defaultdict(list)
            self._open(outgoing)
            self._align(outgoing)
            self._step(outgoing)
            self._send(outgoing)

    def close(self) -> None:
        self.pcm.close()
        self.steps.close()
        self.scores.close()

    def _busy(self) -> bool:
        """Whether there is work this round; held-back work is none (the loop waits for messages instead of
        spinning on a core the turn's end needs)."""
        floor = self._floor()
        ready = any(w.feed is not None and w.priority >= floor for w in self.windows.values())
        return ready or bool(self.aligning) or (bool(self.opening) and self._room(self.opening[0], 0))

    def _floor(self) -> int:
        """The lowest priority that may open or step now: while a turn's end is decoded, nothing below it."""
        return m.TURN_END if any(w.priority == m.TURN_END for w in self.windows.values()) else m.FILE

    def _room(self, opening: m.Open, opened: int) -> bool:
        """Whether `opening` may open now, with `opened` more windows already opening this round."""
        limit = self.capacity + (self.stream_slots if opening.priority > m.FILE else 0)
        return opening.priority >= self._floor() and len(self.windows) + opened < limit

    def _receive(self) -> list:
        """Everything queued now; waits for the first message only when there is no work."""
        received: list = []
        try:
            first = self.inbox.get_nowait() if self._busy() else self.inbox.get(timeout=1.0)
            while True:
                received.extend(first.items if isinstance(first, m.Batch) else [first])
                first = self.inbox.get_nowait()
        except queue.Empty:
            pass
        return received

    def _handle(self, message) -> None:
        if isinstance(message, m.Probe):
            self.events.put(m.Ready("inference", self.index, message.nonce, os.getpid()))
        elif isinstance(message, m.Open):
            # behind every window of its priority or higher, ahead of the rest
            ahead = sum(1 for o in self.opening if o.priority >= message.priority)
            self.opening.insert(ahead, message)
        elif isinstance(message, m.Step):
            window = self.windows.get(message.wid)
            if window is None:
                return
            window.sequences, window.feed, window.rules = apply_instruction(self.runtime, window.handle,
                                                                            window.sequences, message.instruction)
            if isinstance(message.instruction, Align):
                self.aligning.append((message.wid, message.instruction.tokens))
        elif isinstance(message, m.Release):
            self._release(message.wid)
            self.opening = deque(o for o in self.opening if o.wid != message.wid)

    def _release(self, wid: int) -> None:
        window = self.windows.pop(wid, None)
        if window is not None:
            self.runtime.close_sequences(window.sequences)
            self.runtime.release_window(window.handle)
            self.aligning = [(w, t) for w, t in self.aligning if w != wid]

    def _open(self, outgoing: dict[int, list]) -> None:
        batch, chunks = [], []
        # Windows are encoded in batches of one priority. While turns are being decoded, files' windows are
        # encoded one a round (a batch of 30 s file windows is the longest call this process makes, and a turn
        # waiting behind it waits longest); while a turn's end is, nothing else is.
        turns_live = any(w.priority > m.FILE for w in self.windows.values())
        while self.opening and self._room(self.opening[0], len(batch)):
            head = self.opening[0]
            if batch and (batch[0].priority != head.priority or (turns_live and head.priority == m.FILE)):
                break
            opening = self.opening.popleft()
            try:
                chunks.append(opening.span.gather(self.pcm.view(opening.pcm)))
            except BlockGone as gone:  # the request ended (timed out, cancelled) while its window waited
                outgoing[opening.decoder].append(m.WindowError(opening.wid, str(gone)))
                continue
            batch.append(opening)
        if not batch:
            return
        try:
            handles = self.runtime.encode(log_mel_windows(chunks, self.n_mels),
                                          [o.span.encoded_samples() for o in batch])
        except Exception as error:  # a bad window must not take the device down with it
            log.exception("encoding failed")
            for o in batch:
                outgoing[o.decoder].append(m.WindowError(o.wid, f"encoding failed: {error}"))
            return
        finally:
            del chunks  # views into the requests' blocks, some of them
            waiting = {o.pcm.name for o in self.opening}
            for name in {o.pcm.name for o in batch} - waiting:
                self.pcm.forget(name)
        for o, handle in zip(batch, handles):
            sequences = self.runtime.open_sequences(handle, len(o.tokens))
            frames = min(self.runtime.dims.n_audio_ctx, o.span.samples // 320 + 1)
            self.windows[o.wid] = _Window(o.decoder, handle, frames, sequences, o.tokens, o.rules, o.priority)

    def _align(self, outgoing: dict[int, list]) -> None:
        if not self.aligning:
            return
        requests, self.aligning = self.aligning, []
        requests = [(wid, tokens) for wid, tokens in requests if wid in self.windows]
        answers = self.runtime.alignment_scores([(self.windows[wid].handle, tokens) for wid, tokens in requests])
        for (wid, tokens), scores in zip(requests, answers):
            window = self.windows[wid]
            shape = (self.heads, len(tokens), window.frames)
            offset = window.handle * self.align_slot
            self.scores.array(shape, "float32", offset)[:] = scores[:, :, : window.frames]
            outgoing[window.decoder].append(m.Scores(wid, self.scores.ref(shape, "float32", offset)))

    def _step(self, outgoing: dict[int, list]) -> None:
        """One decoder step for every window that has its next tokens, a step per priority, highest first, each
        one's answers sent before the next runs: a file load delays a growing turn's next step by at most one
        step of the files. While a turn's end is decoded (m.TURN_END), only turns' ends step: on a CPU every
        other step would share its cores."""
        ready = [(wid, w) for wid, w in self.windows.items() if w.feed is not None]
        floor = self._floor()
        for level in sorted({w.priority for w in self.windows.values() if w.priority >= floor}, reverse=True):
            group = [(wid, w) for wid, w in ready if w.priority == level]
            if group:
                self._step_group(group, outgoing)
                self._send(outgoing)

    def _send(self, outgoing: dict[int, list]) -> None:
        for decoder, items in outgoing.items():
            self.decoder_inboxes[decoder].put(m.Batch(items))
        outgoing.clear()

    def _step_group(self, ready: list, outgoing: dict[int, list]) -> None:
        if not ready:
            return
        try:
            logits = self.runtime.step_logits(
                [s for _, w in ready for s in w.sequences], [t for _, w in ready for t in w.feed]
            )
            reduced = self.reducer.reduce(logits, [w.rules for _, w in ready])
        except Exception as error:
            log.exception("decoder step failed")
            for wid, window in ready:
                outgoing[window.decoder].append(m.WindowError(wid, f"decoder step failed: {error}"))
                self._release(wid)
            return
        for (wid, window), rows in zip(ready, reduced):
            offset = window.handle * self.max_rows * self.row_bytes
            self.steps.array(rows.shape, "float32", offset)[:] = rows
            outgoing[window.decoder].append(m.Reduced(wid, self.steps.ref(rows.shape, "float32", offset)))
            window.feed = None


def run_inference(index: int, device: str, settings: EngineSettings, windows_in_flight: int, stream_slots: int,
                  threads: int,
                  inbox: Queue, events: Queue, decoder_inboxes: list[Queue], prefix: str,
                  heartbeat: Heartbeat, log_level: str) -> None:
    """Process entry point."""
    ignore_stop_signals()
    logs.configure(log_level)
    heartbeat.start_pulse()
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    worker = InferenceWorker(index, device, settings, windows_in_flight, stream_slots, inbox, events, decoder_inboxes, prefix,
                             heartbeat)
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
