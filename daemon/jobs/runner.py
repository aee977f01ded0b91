"""The one path from a job's audio to its transcript, run wherever the workers are.

The embedded scheduler (one host) and a worker node (shared mode, daemon/shared/worker_node.py)
both call JobRunner.run: the audio (stored, uploaded or downloaded now), read_span, the workers,
the response body; every outcome lands in the job's record before anyone is told, and each ended
job is counted in the metrics once, here.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from daemon import metrics
from daemon.config import DaemonConfig
from daemon.errors import INTERNAL_FAILURE, ApiError, from_engine_error, request_timed_out, service_not_ready
from daemon.jobs.client import WorkerPool
from daemon.jobs.download import fetch
from daemon.jobs.record import Job, JobError, Options
from daemon.jobs.store import JobStore
from engine.audio.files import SAMPLE_RATE, decode_data_url, read_span
from engine.decoding.options import DecodeOptions
from engine.errors import EngineError, ModelNotInstalledError
from engine.result import Word
from engine.speakers.options import SpeakerOptions
from engine.text.response import response_body
from engine.text.format import TextOptions

log = logging.getLogger("async_engine.jobs")


class JobRunner:
    def __init__(self, config: DaemonConfig, store: JobStore, workers: WorkerPool,
                 on_finished: Callable[[Job], None] = lambda job: None,
                 cut_short: Callable[[Job, ApiError], bool] = lambda job, error: False) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.on_finished = on_finished  # the webhooks' hook: called with every job that ends
        # True when a failure is not the job's own (the server stops under it, the store is away): the job
        # is left unfinished, to run again, instead of ending in error
        self.cut_short = cut_short

    def run(self, job: Job, deadline: float, audio: bytes | bytearray | None = None) -> Job:
        """Audio to transcript for one job, its record updated with the outcome; raises its ApiError."""
        started = time.monotonic()
        options = job.options
        try:
            pcm, offset_ms = self._decode(job, deadline, audio)
            del audio
            duration = pcm.shape[1] / SAMPLE_RATE
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise request_timed_out(self.config.request_timeout_seconds)
            transcribed = self.workers.submit(job.id, pcm, remaining, self._decode_options(job))
            channels = transcribed.channels
            speech = transcribed.speech[0] if transcribed.speech else []  # empty: the words' runs stand in
            speakers, names = (self._speakers(pcm[0], speech, channels[0], options)
                               if options.speaker_labels else (None, None))
            del pcm
            enabled = self.config.enable_auto_punctuation
            text = TextOptions(written=options.format_text, punctuation=options.punctuate and enabled, casing=enabled)
            result = response_body(channels, duration, offset_ms, text, options.dual_channel, job.id, speakers, names)
        except ApiError as error:
            if self.cut_short(job, error):
                raise  # it stays processing, and runs again (the next start, another node)
            self._ended(self.store.finish(job.id, error=JobError(error.code, error.description)), started)
            raise
        job = self.store.finish(job.id, result=result).with_(redecoded=transcribed.redecoded)
        self._ended(job, started)
        return job

    def run_logged(self, job: Job, deadline: float) -> Job | None:
        """Run a queued job (nobody waits on a connection for it) and log its one line; never raises.
        Returns the job as it ended, or None when it was cut short (it stays processing, to run again)."""
        started = time.monotonic()
        try:
            job = self.run(job, deadline)
        except ApiError as error:
            if self.cut_short(job, error):
                log.warning("job=%s origin=%s cut short after %.3f s (%s); it runs again", job.id, job.origin.value,
                            time.monotonic() - started, error.description)
                return None
            job = self.store.get(job.id) or job
        except Exception:  # a bug must cost one job, never a runner thread
            log.exception("job=%s failed unexpectedly", job.id)
            job = self.store.finish(job.id, error=JobError(INTERNAL_FAILURE, "an unexpected server error occurred; "
                                                           f"report job {job.id} to the server's operator"))
            self._ended(job, started)
        audio = job.result.get("duration") if job.result else None
        log.info("job=%s origin=%s status=%s code=%s audio_s=%s wall_s=%.3f attempt=%d redecoded=%d%s", job.id,
                 job.origin.value, job.status.value, job.error.code if job.error else "-",
                 f"{audio:.3f}" if audio is not None else "-", time.monotonic() - started, job.attempts, job.redecoded,
                 f" error={job.error.description!r}" if job.error else "")
        return job

    def _ended(self, job: Job, started: float) -> None:
        metrics.job_ended(job, time.monotonic() - started)
        self.on_finished(job)

    def _decode(self, job: Job, deadline: float, audio: bytes | bytearray | None) -> tuple:
        """(pcm, offset_ms) of the span to transcribe; the encoded file is let go of on return."""
        data = audio if audio is not None else self._audio(job, deadline)
        options = job.options
        try:
            return read_span(data, dual_channel=options.dual_channel, start_ms=options.audio_start_from,
                             end_ms=options.audio_end_at, max_seconds=self.config.max_audio_seconds)
        except EngineError as exc:
            raise from_engine_error(exc) from None

    def _audio(self, job: Job, deadline: float) -> bytearray:
        """The job's encoded file: stored (uploaded, or fetched by an earlier attempt) or downloaded now,
        and then stored when the job would run again after a restart."""
        if job.audio is not None:
            return self.store.read_audio(job)
        data = fetch(job.options.audio_url, self.config.download, deadline)
        if job.origin.resumable:
            self.store.keep_audio(job.id, data)
        return data

    def _speakers(self, audio: np.ndarray, speech: list[tuple[int, int]], words: list[Word],
                  options: Options) -> tuple[list[int], list[str] | None]:
        """A speaker per word, and their names when known samples were given, found where the job's audio is
        (engine/speakers/diarize.py; its encoder loads with the first job that asks)."""
        from engine.speakers.diarize import encoder_for, names_of, sample_voice, who_spoke_when
        from engine.speakers.store import weights_path  # torch: never loaded on an API node

        try:
            weights = weights_path(self.config.engine.models_dir)
        except ModelNotInstalledError as exc:
            raise service_not_ready(f"speaker labels are not available here: {exc}") from None
        bounds = SpeakerOptions(options.speakers_expected, options.min_speakers, options.max_speakers)
        encoder = encoder_for(weights)
        found = who_spoke_when(audio, speech, bounds, encoder, words)
        if not options.known_speakers:
            return found.of_words(words), None
        known = [(name, sample_voice(decode_data_url(url), encoder)) for name, url in options.known_speakers]
        return found.of_words(words), names_of(found.voices, known)

    @staticmethod
    def _decode_options(job: Job) -> DecodeOptions:
        return decode_options(job.options)


def decode_options(options: Options) -> DecodeOptions:
    """How a request's windows are decoded: its prompt, temperature and word_boost."""
    return DecodeOptions.for_request(options.prompt, options.temperature, options.word_boost,
                                     options.boost_param or "default")
