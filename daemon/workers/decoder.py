"""Decoder process: voice-activity planning, the searches of its windows, and their words.

It owns the decoder-side state of every window the supervisor gives it (engine.decoding.window.WindowJob)
and talks to the inference processes in batches: one message per inference process per round,
holding every window's next rows, restarts and alignment requests.
"""

from __future__ import annotations

import logging
import os
import queue
from collections import defaultdict
from dataclasses import dataclass, replace
from multiprocessing.queues import Queue

import torch

from daemon import logs
from daemon.workers import messages as m
from daemon.workers.lifeline import Heartbeat, ignore_stop_signals
from daemon.malloc import release_free_memory
from daemon.workers.shm import Attachments, BlockGone
from engine.decoding.loop import Finish, next_instruction
from engine.lm.fusion import language_model_scorers, language_model_terms
from engine.model.store import model_path, read_model_config
from engine.decoding.search import SearchConfig
from engine.settings import EngineSettings
from engine.text.tokenizer import WhisperTokenizer
from engine.audio.vad import VoiceActivityDetector
from engine.decoding.window import WindowJob

log = logging.getLogger("async_engine.decoder")


@dataclass
class _Live:
    uid: str
    channel: int
    inference: int
    job: WindowJob


class DecoderWorker:
    def __init__(self, index: int, settings: EngineSettings, inbox: Queue, events: Queue,
                 inference_inboxes: list[Queue], heartbeat: Heartbeat) -> None:
        self.index = index
        self.heartbeat = heartbeat
        self.inbox = inbox
        self.events = events
        self.inference_inboxes = inference_inboxes
        config = read_model_config(settings.models_dir, settings.model)
        tokenizer_path = model_path(settings.models_dir, settings.model) / "tokenizer.json"
        self.tokenizer = WhisperTokenizer(tokenizer_path, config["dims"]["n_vocab"])
        self.search_config = SearchConfig.for_model(self.tokenizer, config, settings.beam_size,
                                                    language_model_scorers(settings, self.tokenizer),
                                                    language_model_terms(settings, self.tokenizer), settings.device)
        self.vad = VoiceActivityDetector()
        self.shm = Attachments()
        self.windows: dict[int, _Live] = {}

    def run(self) -> None:
        parent = os.getppid()
        worked = False  # since memory was last released
        while True:
            self.heartbeat.beat()
            try:
                item = self.inbox.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # the supervisor is gone: nobody will read our answers
                    return
                if worked and not self.windows:  # a second with nothing to do
                    release_free_memory()
                    worked = False
                continue
            worked = True
            outgoing: dict[int, list] = defaultdict(list)
            items = item.items if isinstance(item, m.Batch) else [item]
            for message in items:
                if isinstance(message, m.Stop):
                    self.shm.close()
                    return
                self._handle(message, outgoing)
            for inference, batch in outgoing.items():
                self.inference_inboxes[inference].put(m.Batch(batch))

    def _handle(self, message, outgoing: dict[int, list]) -> None:
        if isinstance(message, m.Probe):
            self.events.put(m.Ready("decoder", self.index, message.nonce, os.getpid()))
        elif isinstance(message, m.Plan):
            self._plan(message)
        elif isinstance(message, m.Window):
            self._open(message, outgoing)
        elif isinstance(message, m.Reduced):
            self._advance(message, outgoing)
        elif isinstance(message, m.Scores):
            self._words(message, outgoing)
        elif isinstance(message, m.WindowError):
            live = self.windows.pop(message.wid, None)
            if live is not None:
                self.events.put(m.WorkerFailure(live.uid, message.message))
        elif isinstance(message, m.Cancel):
            for wid in [w for w, live in self.windows.items() if live.uid == message.uid]:
                live = self.windows.pop(wid)
                outgoing[live.inference].append(m.Release(wid))

    def _plan(self, message: m.Plan) -> None:
        """VAD windows of one channel; the audio block is let go at once.

        The decoder never reads a request's audio again (the inference process gathers windows
        itself), and a block kept attached stays in memory after the front unlinks it: the
        soak benchmark saw every request's audio pile up in the decoder.
        """
        try:
            block = self.shm.view(message.pcm)
        except BlockGone as gone:  # the request ended before its plan came up: its job is cancelled or failing
            self.events.put(m.WorkerFailure(message.uid, f"its audio was released before it was planned ({gone})"))
            return
        pcm = block[message.channel]
        windows = self.vad.windows(pcm, call_channel=block.shape[0] > 1)  # two channels: dual_channel's sides
        del block
        del pcm
        self.shm.forget(message.pcm.name)
        self.events.put(m.Planned(message.uid, message.channel, windows))

    def _open(self, message: m.Window, outgoing: dict[int, list]) -> None:
        job = WindowJob(self.search_config, self.tokenizer, message.span, message.options)
        self.windows[message.wid] = _Live(message.uid, message.channel, message.inference, job)
        ref = message.pcm
        channel = replace(ref, shape=(ref.shape[1],), offset=ref.offset + message.channel * ref.shape[1] * 4)
        outgoing[message.inference].append(
            m.Open(message.wid, self.index, channel, job.span, job.decode.search.first_tokens(),
                   job.decode.search.rules(), message.priority)
        )

    def _advance(self, message: m.Reduced, outgoing: dict[int, list]) -> None:
        live = self.windows.get(message.wid)
        if live is None:  # cancelled while the step was in flight
            return
        instruction = next_instruction(live.job, self.shm.view(message.rows))
        if isinstance(instruction, Finish):
            self.windows.pop(message.wid)
            outgoing[live.inference].append(m.Release(message.wid))
            self.events.put(m.WindowDone(message.wid, live.uid, live.channel, [], live.job.redo))
        else:
            outgoing[live.inference].append(m.Step(message.wid, instruction))

    def _words(self, message: m.Scores, outgoing: dict[int, list]) -> None:
        live = self.windows.pop(message.wid, None)
        if live is None:
            return
        words = live.job.words(self.shm.view(message.scores).copy())
        outgoing[live.inference].append(m.Release(message.wid))
        self.events.put(m.WindowDone(message.wid, live.uid, live.channel, words, live.job.redo))


def run_decoder(index: int, settings: EngineSettings, inbox: Queue, events: Queue,
                inference_inboxes: list[Queue], heartbeat: Heartbeat, log_level: str) -> None:
    """Process entry point."""
    ignore_stop_signals()
    logs.configure(log_level)
    heartbeat.start_pulse()
    # A decoder is one core's worth of work (the pool has one per core left over): its only torch call,
    # the beam's top-k, must not wake a second thread that spins against the inference process.
    torch.set_num_threads(1)
    try:
        DecoderWorker(index, settings, inbox, events, inference_inboxes, heartbeat).run()
    except KeyboardInterrupt:
        pass
