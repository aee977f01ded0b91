"""One live stream: its WebSocket's frames in, its turns' messages out, its decodes on the shared workers.

Three kinds of thread touch a session, and each has one job: the connection's own thread reads
frames and feeds the turn tracker (engine/streaming/turns.py); decode threads (two: a partial and a
final may be in flight together) run the decodes it asks for through the worker pool, with priority
over files; one sender thread writes messages, through a bounded queue, so a client that stops
reading is noticed (the queue fills) instead of blocking the reader or the decodes. The turn tracker
is only touched under the session's lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from daemon import metrics
from daemon.errors import ApiError
from daemon.stream import protocol
from daemon.stream.params import BadParameter, StreamParams, update
from engine.audio.live_input import LiveAudio
from engine.audio.live_vad import LiveVad
from engine.decoding.options import DecodeOptions
from engine.result import Word
from engine.streaming.turns import Decode, LiveTurns, TurnUpdate
from engine.text.format import TextOptions

log = logging.getLogger("async_engine.stream")

MAX_FRAME_SECONDS = 1.0  # audio in one binary frame (AssemblyAI: 50-1000 ms); more is closed with 3007
MAX_AHEAD_SECONDS = 30.0  # audio received beyond the wall time since Begin; more is closed with 4029
OUTGOING_MESSAGES = 256  # messages waiting for a client that does not read; more closes the stream
DECODE_TIMEOUT_SECONDS = 60.0
FINISH_SECONDS = 30.0  # after Terminate: the last turn's decode may take this long

# (uid, 16 kHz mono audio, options, timeout, urgent) -> words in ms of that audio; raises ApiError
DecodeFunction = Callable[[str, np.ndarray, DecodeOptions, float, bool], list[Word]]


@dataclass(frozen=True)
class SessionLimits:
    max_audio_seconds: float  # MAX_AUDIO_SECONDS: a longer stream is closed with 3008
    formatted: TextOptions  # format_turns' text: ENABLE_AUTO_PUNCTUATION applies as for files


class _Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class StreamSession:
    def __init__(self, session_id: str, connection: ServerConnection, params: StreamParams, decode: DecodeFunction,
                 limits: SessionLimits, vad: LiveVad) -> None:
        self.id = session_id
        self.connection = connection
        self.params = params
        self.decode = decode
        self.limits = limits
        self.audio = LiveAudio(params.sample_rate, params.encoding)
        self.turns = LiveTurns(params.turns, vad)
        self.lock = threading.Lock()
        self.decoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"stream-{session_id[:8]}")
        self.outgoing: queue.Queue[str | None] = queue.Queue(OUTGOING_MESSAGES)
        self.failure: _Closed | None = None  # set by a decode thread; the reader closes the stream with it
        self.pending = 0  # decodes in flight
        self.asked_at: dict[int, float] = {}  # ticket -> when the audio that asked for it arrived
        self.started = time.monotonic()
        self.stopping = threading.Event()  # the server is shutting down

    # -- the connection's thread ------------------------------------------------------------------

    def run(self) -> int:
        """Serve the stream until it ends; returns the close code."""
        sender = threading.Thread(target=self._send_loop, name=f"stream-send-{self.id[:8]}", daemon=True)
        sender.start()
        self._send(protocol.begin(self.id, self.limits.max_audio_seconds))
        try:
            code, reason = self._serve()
        except _Closed as closed:
            code, reason = closed.code, closed.reason
        finally:
            self.decoders.shutdown(wait=False, cancel_futures=True)
        if code != protocol.NORMAL and reason:
            self._send(protocol.error(code, reason))
        self._send(None)
        sender.join(5.0)
        try:
            self.connection.close(code, protocol.close_reason(reason))
        except Exception:  # the client is gone already
            pass
        return code

    def _serve(self) -> tuple[int, str]:
        last_audio = time.monotonic()
        while True:
            if self.failure is not None:
                raise self.failure
            if self.stopping.is_set():
                raise _Closed(protocol.UNAVAILABLE, "the server is shutting down; reconnect to another instance")
            try:
                frame = self.connection.recv(timeout=0.5)
            except TimeoutError:
                if time.monotonic() - last_audio > self.params.inactivity_seconds:
                    raise _Closed(protocol.IDLE, f"no audio for {self.params.inactivity_seconds} s "
                                                 "(inactivity_timeout)") from None
                continue
            except ConnectionClosed:
                return protocol.NORMAL, ""  # the client went away: nobody to tell
            if isinstance(frame, str):
                if self._message(frame):
                    return self._finish()
                continue
            last_audio = time.monotonic()
            self._audio(frame)

    def _audio(self, frame: bytes) -> None:
        seconds = self.audio.seconds(len(frame))
        if seconds > MAX_FRAME_SECONDS:
            raise _Closed(protocol.CHUNK_TOO_LONG, f"an audio frame holds {seconds * 1000:.0f} ms; send at most "
                                                   f"{MAX_FRAME_SECONDS * 1000:.0f} ms a frame")
        received = self.audio.received_samples / self.audio.sample_rate + seconds
        if received > self.limits.max_audio_seconds:
            raise _Closed(protocol.SESSION_TOO_LONG, f"the stream passed {self.limits.max_audio_seconds:.0f} s of "
                                                     "audio (MAX_AUDIO_SECONDS)")
        if received - (time.monotonic() - self.started) > MAX_AHEAD_SECONDS:
            raise _Closed(protocol.TOO_FAST, f"audio arrives more than {MAX_AHEAD_SECONDS:.0f} s ahead of real time; "
                                             "stream it at real-time pace")
        metrics.stream_audio(seconds)
        samples = self.audio.push(frame)
        arrived = time.monotonic()
        with self.lock:
            self._act(self.turns.push(samples), arrived)

    def _message(self, text: str) -> bool:
        """A client message; True when it ends the stream (Terminate)."""
        try:
            message = protocol.client_message(text)
        except protocol.BadMessage as bad:
            raise _Closed(bad.code, str(bad)) from None
        kind = message["type"]
        if kind == "Terminate":
            return True
        if kind == "ForceEndpoint":
            with self.lock:
                self._act(self.turns.force_endpoint(), time.monotonic())
        elif kind == "UpdateConfiguration":
            try:
                self.params = update(self.params, message)
            except BadParameter as bad:
                raise _Closed(protocol.INVALID_INPUT, str(bad)) from None
            with self.lock:
                self.turns.update(self.params.turns)
        return False

    def _finish(self) -> tuple[int, str]:
        """Terminate: the turn in progress ends and is decoded, then Termination."""
        tail = self.audio.flush()
        with self.lock:
            self._act(self.turns.push(tail) + self.turns.force_endpoint(), time.monotonic())
        deadline = time.monotonic() + FINISH_SECONDS
        while time.monotonic() < deadline:
            with self.lock:
                if self.pending == 0:
                    break
            if self.failure is not None:
                raise self.failure
            time.sleep(0.02)
        self._send(protocol.termination(self.audio.received_samples / self.audio.sample_rate,
                                        time.monotonic() - self.started))
        return protocol.NORMAL, ""

    # -- under the lock: what the turn tracker asks for -------------------------------------------------

    def _act(self, outputs: list, arrived: float) -> None:
        for output in outputs:
            if isinstance(output, Decode):
                self.pending += 1
                self.asked_at[output.ticket] = arrived
                self.decoders.submit(self._run_decode, output)
            elif isinstance(output, TurnUpdate):
                self._tell(output, arrived)

    def _tell(self, update_: TurnUpdate, arrived: float) -> None:
        metrics.stream_turn_sent("final" if update_.end_of_turn else "partial", time.monotonic() - arrived)
        self._send(protocol.turn(update_, None))
        if update_.end_of_turn and self.params.format_turns:
            self._send(protocol.turn(update_, self.limits.formatted))

    # -- decode threads -----------------------------------------------------------------------------

    def _run_decode(self, request: Decode) -> None:
        options = DecodeOptions(word_boost=self.params.keyterms)
        try:
            words = self.decode(f"s_{self.id}_{request.ticket}", request.audio, options, DECODE_TIMEOUT_SECONDS,
                                request.urgent)
        except ApiError as error:
            self.failure = _Closed(protocol.SERVER_ERROR, f"a turn could not be transcribed: {error.description}")
            words = None
        except Exception:  # a bug must cost one stream, never the server
            log.exception("stream=%s decode failed", self.id)
            self.failure = _Closed(protocol.SERVER_ERROR, "a turn could not be transcribed (server error)")
            words = None
        with self.lock:
            self.pending -= 1
            arrived = self.asked_at.pop(request.ticket, time.monotonic())
            if words is not None:
                self._act(self.turns.decoded(request.ticket, words), arrived)

    # -- the sender ---------------------------------------------------------------------------------

    def _send(self, message: str | None) -> None:
        try:
            self.outgoing.put_nowait(message)
        except queue.Full:  # the client has not read OUTGOING_MESSAGES messages: drop it
            log.warning("stream=%s the client stopped reading; closing it", self.id)
            self.failure = self.failure or _Closed(protocol.SERVER_ERROR, "the client stopped reading its messages")
            self._abort()

    def _abort(self) -> None:
        """Break a send blocked on a client that does not read; the reader then ends the stream."""
        try:
            self.connection.socket.shutdown(2)
        except OSError:
            pass

    def _send_loop(self) -> None:
        while True:
            message = self.outgoing.get()
            if message is None:
                return
            try:
                self.connection.send(message)
            except (ConnectionClosed, OSError):
                return

