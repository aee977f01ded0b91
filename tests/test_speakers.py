"""Speaker labels in the engine: the encoder held to Resemblyzer's own, and diarization on real voices.

The front end and the network are ours (engine/speakers/encoder.py); here they are compared with
librosa's mel spectrogram and Resemblyzer's VoiceEncoder, both installed for the tests only, on
recorded speech. Conversations of two real voices come from ../shared/eval (bench/speakers.py builds
them; skipped when it is absent); one generated voice must stay one speaker, and silence none.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import dataset
from bench.speakers import build, speaker_at
from engine.audio.vad import VoiceActivityDetector
from engine.result import Word
from engine.speakers import diarize
from engine.speakers.diarize import Speakers, Turn, encoder_for, who_spoke_when
from engine.speakers.encoder import HOP, N_FFT, N_MELS, SAMPLE_RATE
from engine.speakers.options import SpeakerOptions
from engine.speakers.store import weights_path
from engine.text.response import response_body
from engine.text.format import TextOptions
from synth import silence, speak_at

EVAL = dataset.default_eval_dir()
needs_eval = pytest.mark.skipif(not (EVAL / "dev.tsv").is_file(), reason=f"no eval set at {EVAL}")


@pytest.fixture(scope="module")
def encoder(models_dir):
    return encoder_for(weights_path(models_dir))  # ./install.sh installs it: `async-engine models install speakers`


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Recorded speech (JFK) when the eval set is here, else generated."""
    jfk = EVAL / "jfk" / "jfk.flac"
    if jfk.is_file():
        return dataset.load_audio(dataset.Clip(path=jfk, reference="", source="jfk"))
    return speak_at("And so my fellow Americans, ask not what your country can do for you.", SAMPLE_RATE)


def test_mel_frames_are_librosas(encoder, speech):
    librosa = pytest.importorskip("librosa")
    expected = librosa.feature.melspectrogram(y=speech, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                              n_mels=N_MELS).T
    ours = encoder.mels(torch.from_numpy(speech)[None])[0].numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-4 * expected.max()


def test_embeddings_are_resemblyzers(encoder, speech):
    resemblyzer = pytest.importorskip("resemblyzer")
    theirs = resemblyzer.VoiceEncoder("cpu", verbose=False)
    windows = np.stack([speech[i:i + 24000] for i in range(0, len(speech) - 24000, 12000)])
    mels = encoder.mels(torch.from_numpy(windows))
    with torch.no_grad():
        expected = theirs(mels).numpy()
        ours = encoder(mels).numpy()
    assert np.min(np.sum(expected * ours, axis=1)) > 0.9999
    assert np.allclose(encoder.embed(windows), ours, atol=1e-5)


def test_one_voice_is_one_speaker_and_silence_none(encoder, transcriber):
    audio = np.concatenate([speak_at("Thank you for calling the pharmacy, how can I help you today?", SAMPLE_RATE),
                            silence(0.8, SAMPLE_RATE),
                            speak_at("Your refill will be ready tomorrow after ten in the morning.", SAMPLE_RATE)])
    transcript = transcriber.transcribe(audio)
    words = transcript.words
    assert len(words) > 10
    # the transcript says where its VAD heard speech, and the words lie there
    assert len(transcript.speech) >= 2 and transcript.speech == sorted(transcript.speech)
    assert all(any(start <= (w.start_ms + w.end_ms) / 2 <= end for start, end in transcript.speech) for w in words)
    found = who_spoke_when(audio, transcript.speech, SpeakerOptions(), encoder, words)
    assert len(found.voices) == 1 and {turn.speaker for turn in found.turns} == {0}
    assert set(found.of_words(words)) == {0}
    nobody = who_spoke_when(silence(3, SAMPLE_RATE), [], SpeakerOptions(), encoder)
    assert nobody.turns == [] and nobody.of_words([]) == []


def test_words_stand_in_where_the_detector_hears_nothing(encoder):
    """A transcript with words over audio the VAD calls silence (a whisper, a voice under noise) still gets a
    speaker for every word."""
    words = [Word("hello", 500, 900, 0.5), Word("there", 950, 1400, 0.5)]
    found = who_spoke_when(silence(3, SAMPLE_RATE), [], SpeakerOptions(), encoder, words)
    assert found.turns == [Turn(500, 1400, 0)] and found.of_words(words) == [0, 0]


@needs_eval
@pytest.mark.parametrize("given", [False, True], ids=["count-estimated", "count-given"])
def test_two_real_voices(encoder, transcriber, given):
    """A conversation of two recorded readers taking turns: two speakers, and nearly every word to its turn's."""
    conversation = build(EVAL, {2: 1}, seed=4)[0]
    transcript = transcriber.transcribe(conversation.audio)
    words = transcript.words
    found = who_spoke_when(conversation.audio, transcript.speech, SpeakerOptions(expected=2 if given else None),
                           encoder, words)
    labels = found.of_words(words)
    assert len(set(labels)) == 2 and len(found.voices) == 2
    truth = [speaker_at(conversation.turns, (w.start_ms + w.end_ms) / 2000) for w in words]
    first = {label: speaker for label, speaker in zip(labels, truth) if speaker}  # the mapping, from any word
    right = sum(first[label] == speaker for label, speaker in zip(labels, truth))
    assert right >= 0.9 * len(words), (right, len(words))
    # and the turns found cover the voices: each 100 ms of a turn's speech found, and found as its speaker's
    moments = [(t.speaker, at / 10) for t in conversation.turns for start, end in t.speech
               for at in range(round(start * 10), round(end * 10))]
    found_at = {at: turn.speaker for turn in found.turns for at in range(turn.start_ms // 100, turn.end_ms // 100)}
    covered = sum(first.get(found_at.get(round(second * 10))) == speaker for speaker, second in moments)
    assert covered >= 0.85 * len(moments), (covered, len(moments))


def test_bounds_and_a_given_count_are_kept(encoder, speech):
    # one voice said four times over, 0.6 s apart: more pieces than the count asked for
    gap = silence(0.6, SAMPLE_RATE)
    audio = np.concatenate([speech, gap, speech, gap, speech, gap, speech])
    heard = [span for window in VoiceActivityDetector().windows(audio) for span in window.speech_ms()]

    def count(options: SpeakerOptions) -> int:
        return len(who_spoke_when(audio, heard, options, encoder).voices)

    assert count(SpeakerOptions(expected=3)) == 3
    assert count(SpeakerOptions(min_speakers=2)) >= 2
    assert count(SpeakerOptions(max_speakers=1)) == 1


def test_words_take_the_turn_holding_most_of_them():
    found = Speakers([Turn(0, 1000, 0), Turn(1000, 2500, 1), Turn(4000, 5000, 0)], np.eye(2, dtype=np.float32))
    words = [Word("a", 100, 400, 1), Word("b", 800, 1500, 1), Word("c", 2600, 2900, 1), Word("d", 3700, 3900, 1),
             Word("e", 5200, 5600, 1)]
    # b: mostly in the second turn; c and d, in none: the nearest; e: after the last
    assert found.of_words(words) == [0, 1, 1, 0, 0]
    assert Speakers([], np.zeros((0, 256), np.float32)).of_words(words[:2]) == [0, 0]


def test_long_files_cluster_a_sample_and_place_the_rest(monkeypatch):
    """Past MAX_CLUSTERED pieces the tree is grown on an even sample and every piece joins its nearest group,
    so the distances held do not grow with the file."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 256, dtype=np.float32)
    truth = rng.integers(0, 3, 500)
    voices = centres[truth] + rng.normal(0, 0.02, (500, 256)).astype(np.float32)
    voices /= np.linalg.norm(voices, axis=1, keepdims=True)
    monkeypatch.setattr(diarize, "MAX_CLUSTERED", 60)
    found = diarize._clusters(voices, np.ones(500), SpeakerOptions())
    assert len(set(found.tolist())) == 3
    assert all(len(set(found[truth == speaker].tolist())) == 1 for speaker in range(3))
def test_utterances_per_speaker():
    """Words keep the speaker of the raw words they were made from ("twenty five" -> "25"), and an utterance is
    a run of one speaker's words, cut at a pause over 1.5 s."""
    raw = [Word("I", 0, 200, 0.9), Word("paid", 200, 500, 0.9), Word("twenty", 500, 800, 0.9),
           Word("five.", 800, 1100, 0.9), Word("Thanks.", 1400, 1800, 0.8), Word("Bye.", 4000, 4300, 0.7)]
    body = response_body([raw], 5.0, 1000, TextOptions(), dual_channel=False, uid="t_x", speakers=[0, 0, 0, 0, 1, 1])
    assert [(w["text"], w["speaker"], w["start"]) for w in body["words"]] == [
        ("I", "A", 1000), ("paid", "A", 1200), ("25.", "A", 1500), ("Thanks.", "B", 2400), ("Bye.", "B", 5000)]
    assert [(u["speaker"], u["text"]) for u in body["utterances"]] == [("A", "I paid 25."), ("B", "Thanks."),
                                                                        ("B", "Bye.")]
    assert body["stereo_decode"] is False and "channel" not in body["utterances"][0]


def test_known_voices_name_their_speakers():
    """Each speaker takes the name of the nearest known voice within DISTANCE, each name once; the rest letters."""
    voices = np.eye(3, dtype=np.float32)
    near_second = np.array([0.1, 0.99, 0.0], np.float32) / np.linalg.norm([0.1, 0.99, 0.0])
    far = np.array([0.6, 0.0, 0.8], np.float32)  # cosine 0.6 and 0.8 to the first and third: only the third
    assert diarize.names_of(voices, [("Bob", near_second), ("Eve", far)]) == ["A", "Bob", "Eve"]
    assert diarize.names_of(voices, [("Bob", near_second), ("Bo", near_second)]) == ["A", "Bob", "B"]
    assert diarize.names_of(voices, []) == ["A", "B", "C"]


def test_samples_come_as_data_urls(speech):
    import base64
    import io

    import soundfile as sf

    from engine.audio.files import decode_data_url

    out = io.BytesIO()
    sf.write(out, speech, SAMPLE_RATE, format="WAV")
    decoded = decode_data_url("data:audio/wav;base64," + base64.b64encode(out.getvalue()).decode())
    assert abs(len(decoded) - len(speech)) <= 1
    for bad in ("https://example.com/a.wav", "data:audio/wav,plain", "data:audio/wav;base64,%%%"):
        with pytest.raises(ValueError):
            decode_data_url(bad)


def test_windows_cover_all_the_speech():
    spans = diarize._windows([(0, 400), (3000, 6000)], 10_000)
    assert spans[0] == (0, diarize.WINDOW_MS)  # a short stretch: one window, borrowing audio after it
    assert spans[-1][1] == 6000 and all(end - start == diarize.WINDOW_MS for start, end in spans)


def test_long_speech_is_cut_into_equal_pieces():
    assert diarize._pieces([(0, 2000), (2500, 9500)]) == [(0, 2000), (2500, 4833), (4833, 7167), (7167, 9500)]
