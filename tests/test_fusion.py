"""KenLM shallow fusion and word_boost: the scorers on the real tokenizer and a real KenLM model, then the
real model deciding differently with them, in-process and through the real daemon's three APIs."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import assemblyai as aai
import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from daemon_support import ROOT, audio_server, running_daemon
from engine.decoding.options import MAX_BOOST_PHRASES, DecodeOptions, check_word_boost
from engine.lm.fusion import LanguageModelFusion, WordBoost
from engine.lm.toolkit import build_model, find_tool, load_language_model
from engine.lm.text import normalize_words
from synth import silence, speak_at

SR = 16000
# tiny.en hears eSpeak's "Montreal Forced Aligner" as "Montreal forced a liner", and its "metoprolol" as
# "me to run out": jargon a domain LM or a boosted word should bring back.
ALIGNER = "Montreal Forced Aligner, I hardly know her."
# For the recheck, speech whose rare word itself is lost: tiny.en hears "Montreal Force to line around
# every file". ALIGNER is borderline there: AVX2's int8 kernels hear "forced a liner" (a near miss),
# AVX-512's "forest aligner", where only an ordinary word differs and by design no recheck is due.
FAR_ALIGNER = "We ran the Montreal Forced Aligner on every file."
DOMAIN_TEXT = ROOT / "bench" / "domains" / "forced_alignment" / "lm.txt"  # the benchmark's LM corpus
DRUG = "Start the patient on metoprolol twice a day."
CORPUS = """The Montreal Forced Aligner aligns a transcript with its recording.
We ran the Montreal Forced Aligner on every speaker of the corpus.
A forced aligner needs a pronunciation dictionary and an acoustic model.
The aligner writes one TextGrid per recording, with word and phone tiers.
Researchers train the aligner on their own data when the pretrained model does not fit.
Forced alignment with the Montreal Forced Aligner takes a few minutes for an hour of speech.
"""


def _tools_or_skip() -> None:
    try:
        find_tool("lmplz"), find_tool("build_binary")
    except Exception as exc:  # noqa: BLE001 (the toolkit's own message says how to get them)
        pytest.skip(f"KenLM's lmplz/build_binary are not built here: {exc}")


@pytest.fixture(scope="module")
def domain_lm(tmp_path_factory) -> Path:
    _tools_or_skip()
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text(CORPUS)
    build_model(root / "corpus.txt", root / "domain.klm", 3, progress=False)
    return root / "domain.klm"


@pytest.fixture(scope="module")
def aligner_lm(tmp_path_factory) -> Path:
    """A realistic domain model: the forced-alignment benchmark's corpus (text written for it, ~4,700 words)."""
    _tools_or_skip()
    out = tmp_path_factory.mktemp("aligner-lm") / "aligner.klm"
    build_model(DOMAIN_TEXT, out, 3, progress=False)
    return out


@pytest.fixture(scope="module")
def tokenizer(installed_model: Path):
    import json

    from engine.text.tokenizer import WhisperTokenizer

    config = json.loads((installed_model / "config.json").read_text())
    return WhisperTokenizer(installed_model / "tokenizer.json", config["dims"]["n_vocab"])


@pytest.fixture(scope="module")
def texts(tokenizer) -> tuple[str, ...]:
    return tokenizer.token_texts


@pytest.fixture(scope="module")
def speech(tmp_path_factory, installed_model) -> Path:
    root = tmp_path_factory.mktemp("jargon")
    for name, sentence in (("aligner", ALIGNER), ("far_aligner", FAR_ALIGNER), ("drug", DRUG)):
        audio = np.concatenate([silence(0.3, SR), speak_at(sentence, SR), silence(0.3, SR)])
        sf.write(root / f"{name}.wav", audio, SR, subtype="PCM_16")
    return root


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text)


# --- the fusion scorer ---------------------------------------------------------------------------------

def test_fusion_scores_a_word_once_when_the_next_word_starts(domain_lm, tokenizer, texts):
    """" Al"+"ign"+"er" earn nothing until a token with a leading space (or a timestamp, or the end) completes
    "aligner"; then it earns weight · ln(P(aligner | montreal forced) / P(aligner)) + the word bonus."""
    import kenlm

    model = load_language_model(domain_lm)
    fusion = LanguageModelFusion(model, texts, weight=0.5, word_bonus=1.0)
    state = fusion.initial()
    pieces = _ids(tokenizer, " Montreal Forced Aligner")
    assert [texts[t] for t in pieces] == [" Montreal", " Forced", " Al", "ign", "er"]
    for token in pieces:
        bonuses, states = fusion.advance(state, [token])
        state = states[0]
    assert bonuses == [0.0] and state.partial == " Aligner"
    ends = [tokenizer.eot, tokenizer.timestamp_begin + 50, _ids(tokenizer, " on")[0]]
    bonuses, states = fusion.advance(state, ends)
    assert bonuses[0] == bonuses[1] == bonuses[2]
    empty, after = kenlm.State(), kenlm.State()
    model.NullContextWrite(empty)
    context = empty
    expected = 0.0
    for word in ("montreal", "forced", "aligner"):
        log10 = model.BaseScore(context, word, after)
        context, after = after, kenlm.State()
    unigram = model.BaseScore(empty, "aligner", kenlm.State())
    expected = 0.5 * math.log(10) * (log10 - unigram) + 1.0
    assert bonuses[0] == pytest.approx(expected, abs=1e-4)
    assert states[2].partial == " on" and states[0].partial == ""


def test_fusion_prefers_the_domain_s_words_in_context_and_leaves_other_words_alone(domain_lm, tokenizer, texts):
    fusion = LanguageModelFusion(load_language_model(domain_lm), texts, weight=0.5, word_bonus=0.0)

    def total(text: str) -> float:
        state, score = fusion.initial(), 0.0
        for token in [*_ids(tokenizer, text), tokenizer.eot]:
            bonuses, states = fusion.advance(state, [token])
            score, state = score + bonuses[0], states[0]
        return score

    assert total(" Montreal Forced Aligner") > total(" Montreal Forest Alliance") + 2
    assert total(" Please pay the invoice before Friday") == 0.0, "words the model does not know score nothing"


# --- the word_boost scorer -----------------------------------------------------------------------------

def test_word_boost_rewards_each_spelling_and_gives_a_broken_match_back(tokenizer, texts):
    boost = WordBoost(["Montreal Forced Aligner"], tokenizer, reward=0.5)

    def run(text: str) -> tuple[float, object]:
        state, score = boost.initial(), 0.0
        for token in _ids(tokenizer, text):
            bonuses, states = boost.advance(state, [token])
            score, state = score + bonuses[0], states[0]
        return score, state

    whole = len(" montreal forced aligner") * 0.5
    assert run(" Montreal Forced Aligner")[0] == pytest.approx(whole)
    assert run(" montreal FORCED aligner")[0] == pytest.approx(whole), "any casing, any tokenisation"
    assert run(" Montreal Forest Alliance")[0] == pytest.approx(0.0), "a false start earns nothing in the end"
    score, state = run(" Montreal Forced")
    assert score > 0 and state.matched == " montreal forced"
    proposed = {texts[t].lower() for t in boost.proposals(state)}
    assert " al" in proposed and " aligner" not in proposed - {" al", " align", " aligner"} | {" al"}
    bonuses, _ = boost.advance(state, [tokenizer.eot])
    assert bonuses[0] == pytest.approx(-score), "the end of the text gives an unfinished match back"


def _boost_total(boost: WordBoost, tokenizer, text: str) -> float:
    """The reward a hypothesis spelling `text` has when it ends there (no end token: matches under way keep theirs)."""
    state, score = boost.initial(), 0.0
    for token in _ids(tokenizer, text):
        bonuses, states = boost.advance(state, [token])
        score, state = score + bonuses[0], states[0]
    return score


def test_word_boost_rewards_a_phrase_once_and_the_phrases_inside_it_with_it(tokenizer):
    """Rewarded at every spelling, a beam says a boosted term again ("Montreal forced aligner, aligner.")."""
    boost = WordBoost(["Montreal Forced Aligner", "forced aligner", "aligner", "TextGrid"], tokenizer, reward=0.5)

    def run(text: str) -> float:
        return _boost_total(boost, tokenizer, text)

    first = len(" montreal forced aligner") * 0.5
    assert run(" Montreal Forced Aligner") == pytest.approx(first)
    assert run(" Montreal Forced Aligner, aligner, forced aligner") == pytest.approx(first)
    assert run(" Montreal Forced Aligner and a TextGrid") == pytest.approx(first + len(" textgrid") * 0.5)
    assert run(" aligner, Montreal Forced Aligner") == pytest.approx(len(" aligner") * 0.5 + first)


def test_word_boost_pays_for_one_form_of_a_term(tokenizer):
    """Paid for each form, a beam that said "Montreal forced aligner" read "forced alignment" off the list next."""
    boost = WordBoost(["Montreal Forced Aligner", "forced aligner", "forced alignment", "atorvastatin",
                       "rosuvastatin"], tokenizer, reward=0.5)

    def run(text: str) -> float:
        return _boost_total(boost, tokenizer, text)

    first = len(" montreal forced aligner") * 0.5
    assert run(" Montreal Forced Aligner, forced alignment") == pytest.approx(first)
    assert run(" forced alignment and forced aligner") == pytest.approx(len(" forced alignment") * 0.5)
    assert run(" forced alignment by the Montreal Forced Aligner") == pytest.approx(
        len(" forced alignment") * 0.5 + first), "a longer term holding more than the form said earns"
    two = len(" atorvastatin") * 0.5 + len(" rosuvastatin") * 0.5
    assert run(" atorvastatin, not rosuvastatin") == pytest.approx(two), "a shared ending is not a shared term"


def test_word_boost_pays_a_term_only_when_its_word_ends(tokenizer):
    """Paid as soon as its letters were spelled, "albuterol" glued to the next word ("albuterolast needed")
    earned the reward while spelling no term, and the window was decoded again as without the list."""
    boost = WordBoost(["albuterol", "Montreal Forced Aligner", "aligner"], tokenizer, reward=0.5)

    def run(text: str) -> float:
        return _boost_total(boost, tokenizer, text)

    term = len(" albuterol") * 0.5
    assert run(" albuterol as needed") == pytest.approx(term)
    assert run(" albuterol. Then") == pytest.approx(term)
    assert run(" albuterolast needed") == pytest.approx(0.0), "a word that goes on is not the term"
    assert run(" Montreal Forced Aligners") == pytest.approx(0.0)
    state = boost.initial()
    for token in _ids(tokenizer, " albuterol"):
        _, (state,) = boost.advance(state, [token])
    bonuses, (after,) = boost.advance(state, [tokenizer.eot])
    assert bonuses[0] == 0.0 and " albuterol" in after.spelled, "the end of the text ends the word"


@pytest.mark.parametrize("restart", [" Montreal forced forced aligner", " Montreal forced, forced aligner"])
def test_word_boost_pays_a_restarted_term_what_the_fluent_one_earns(tokenizer, restart):
    """A speaker who starts a term again ("Montreal forced, forced aligner") must not be corrected by the
    reward: given back whole, the broken start left the restart 2.25 nats behind the fluent spelling, and the
    beam wrote "Montreal forced aligner" for the recordings' mfa_registershift."""
    boost = WordBoost(["Montreal Forced Aligner", "forced aligner"], tokenizer, reward=0.25)

    def run(text: str) -> float:
        return _boost_total(boost, tokenizer, text)

    fluent = run(" Montreal forced aligner")
    assert fluent == pytest.approx(len(" montreal forced aligner") * 0.25)
    assert run(restart) == pytest.approx(fluent)
    assert run(" Montreal forced, and then the aligner") == pytest.approx(0.0), "no restart: the start is given back"
    assert run(" Montreal, forced aligner") == pytest.approx(len(" forced aligner") * 0.25), \
        "punctuation ends the phrase's spelling; only a restart keeps the start's credit"
    assert run(" Montreal forced forced forced aligner") == pytest.approx(fluent), "never more than the term"
    inner = len(" forced aligner") * 0.25
    assert run(" forced aligner, Montreal forced forced.") == pytest.approx(inner), "a restart of a spelled phrase keeps nothing"


def test_word_boost_values_are_checked():
    assert check_word_boost(["  Montreal   Forced Aligner ", "", "MFA", "MFA"]) == ("Montreal Forced Aligner", "MFA")
    for bad, message in [("MFA", "a list"), ([3], "strings"), (["a b c d e f g"], "6 words"), (["x" * 101], "100"),
                         (["--"], "letter or a digit"), (["w"] * (MAX_BOOST_PHRASES + 1), "at most")]:
        with pytest.raises(ValueError, match=message):
            check_word_boost(bad)
    with pytest.raises(ValueError, match="boost_param"):
        DecodeOptions(word_boost=("MFA",), boost_param="max")


def test_boosted_words_lead_the_prompt(tokenizer):
    options = DecodeOptions(prompt="Notes from the lab.", word_boost=("Montreal Forced Aligner", "MFA"))
    tokens = options.prompt_tokens(tokenizer)
    assert tokens[0] == tokenizer.sot_prev
    assert tokenizer.decode(list(tokens[1:])) == " Montreal Forced Aligner, MFA. Notes from the lab."


# --- the real model, in-process ------------------------------------------------------------------------

def _said(text: str) -> str:
    return " ".join(normalize_words(text))


def test_fusion_turns_a_misheard_term_into_the_domain_s(transcriber, speech, aligner_lm):
    import dataclasses

    audio = sf.read(speech / "aligner.wav", dtype="float32")[0]
    plain = transcriber.transcribe(audio).text
    base = transcriber.search_config
    fusion = LanguageModelFusion(load_language_model(aligner_lm), transcriber.tokenizer.token_texts, 0.6, 0.0)
    try:
        transcriber.search_config = dataclasses.replace(base, scorers=(fusion,))
        fused = transcriber.transcribe(audio).text
    finally:
        transcriber.search_config = base
    assert "forced aligner" not in _said(plain), plain
    assert "forced aligner" in _said(fused), (plain, fused)


def test_the_recheck_boosts_the_terms_a_window_nearly_spelled(transcriber, speech, aligner_lm):
    """With the LM's terms and no fusion at all, "Force to line" is a near miss of "Forced Aligner":
    the window is decoded again with it boosted and the recheck's text is the one kept."""
    import dataclasses

    from engine.lm.domain_terms import load_domain_terms

    audio = sf.read(speech / "far_aligner.wav", dtype="float32")[0]
    drug = sf.read(speech / "drug.wav", dtype="float32")[0]
    plain, plain_drug = transcriber.transcribe(audio).text, transcriber.transcribe(drug).text
    terms = load_domain_terms(aligner_lm, transcriber.tokenizer)
    assert terms is not None and "Montreal Forced Aligner" in terms.terms
    base = transcriber.search_config
    try:
        transcriber.search_config = dataclasses.replace(base, domain_terms=terms)
        rechecked, rechecked_drug = transcriber.transcribe(audio).text, transcriber.transcribe(drug).text
    finally:
        transcriber.search_config = base
    assert "forced aligner" not in _said(plain) and terms.near_misses(plain), plain
    assert "forced aligner" in _said(rechecked), (plain, rechecked)
    assert not terms.near_misses(plain_drug) and rechecked_drug == plain_drug  # other speech: no recheck


def test_word_boost_brings_back_a_drug_name(transcriber, speech):
    audio = sf.read(speech / "drug.wav", dtype="float32")[0]
    plain = transcriber.transcribe(audio).text
    boosted = transcriber.transcribe(audio, options=DecodeOptions(word_boost=("metoprolol",))).text
    assert "metoprolol" not in _said(plain), plain
    assert "metoprolol" in _said(boosted), (plain, boosted)


def test_an_empty_word_boost_changes_nothing(transcriber, speech):
    audio = sf.read(speech / "drug.wav", dtype="float32")[0]
    plain = transcriber.transcribe(audio)
    for empty in ((), (" ", "")):  # blank entries are dropped
        options = DecodeOptions(word_boost=empty)
        assert options == DecodeOptions() and options.scorers(transcriber.tokenizer) == ()
        assert transcriber.transcribe(audio, options=options).words == plain.words


# --- the real daemon -----------------------------------------------------------------------------------

def _serve(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "serve"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "ASYNC_ENGINE_PORT": "1", **env})


@pytest.mark.parametrize("content", [b"", b"\x00" * 64 + b"junk", b"\\data\\\nngram 1=2\n"], ids=["empty", "junk", "arpa"])
def test_a_bad_language_model_stops_the_daemon_at_start_naming_the_variable(tmp_path, content):
    bad = tmp_path / "domain.klm"
    bad.write_bytes(content)
    done = _serve({"CUSTOM_LANG_MODEL_PATH": str(bad)})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # (KenLM itself may advise on ARPA files first)
    assert last.startswith("async-engine: CUSTOM_LANG_MODEL_PATH=") and str(bad) in last, done.stderr


def test_a_missing_language_model_stops_the_daemon_at_start(tmp_path):
    done = _serve({"CUSTOM_LANG_MODEL_PATH": str(tmp_path / "absent.klm")})
    assert done.returncode == 2 and "CUSTOM_LANG_MODEL_PATH" in done.stderr, done.stderr


@pytest.fixture(scope="module")
def origin(speech):
    with audio_server(speech) as url:
        yield url


@pytest.fixture(scope="module")
def fused_daemon(tmp_path_factory, aligner_lm):
    with running_daemon(tmp_path_factory.mktemp("fused"), CUSTOM_LANG_MODEL_PATH=str(aligner_lm)) as running:
        running.wait_healthy()
        yield running


def test_the_daemon_fuses_its_language_model(fused_daemon, origin):
    response = fused_daemon.transcribe({"audio_url": f"{origin}/aligner.wav"})
    assert response.status_code == 200, response.text
    assert "forced aligner" in _said(response.json()["blob"]), response.json()["blob"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, installed_model):
    with running_daemon(tmp_path_factory.mktemp("boost")) as running:
        running.wait_healthy()
        yield running


def test_word_boost_over_transcribe_url(daemon, origin):
    url = f"{origin}/drug.wav"
    plain = daemon.transcribe({"audio_url": url}).json()["blob"]
    boosted = daemon.transcribe({"audio_url": url, "word_boost": ["metoprolol"], "boost_param": "high"})
    assert boosted.status_code == 200, boosted.text
    assert "metoprolol" not in _said(plain) and "metoprolol" in _said(boosted.json()["blob"])


def test_an_empty_word_boost_over_the_api_changes_nothing(daemon, origin):
    url = f"{origin}/drug.wav"
    plain = daemon.transcribe({"audio_url": url}).json()
    empty = daemon.transcribe({"audio_url": url, "word_boost": [], "boost_param": "high"})
    assert empty.status_code == 200, empty.text
    assert empty.json()["words"] == plain["words"] and empty.json()["blob"] == plain["blob"]


@pytest.mark.parametrize(("body", "field"), [
    ({"word_boost": "metoprolol"}, "word_boost"),
    ({"word_boost": [7]}, "word_boost"),
    ({"word_boost": ["a b c d e f g"]}, "word_boost"),
    ({"word_boost": ["metoprolol"] * (MAX_BOOST_PHRASES + 1)}, "word_boost"),
    ({"word_boost": ["metoprolol"], "boost_param": "max"}, "boost_param"),
    ({"word_boost": ["metoprolol"], "boost_param": 2}, "boost_param"),
])
def test_bad_word_boost_is_a_400_naming_the_field(daemon, origin, body, field):
    for path, extra in (("/transcribe/url", {}), ("/v2/transcript", {})):
        response = requests.post(daemon.url + path, json={"audio_url": f"{origin}/drug.wav", **body, **extra},
                                 timeout=30)
        assert response.status_code == 400, (path, response.text)
        assert re.search(rf"\b{field}\b", response.text), (path, response.text)


def test_word_boost_through_the_assemblyai_sdk(daemon, origin):
    aai.settings.base_url = daemon.url
    aai.settings.api_key = "unused-key-0123456789"
    aai.settings.polling_interval = 0.2
    config = aai.TranscriptionConfig(word_boost=["metoprolol"], boost_param=aai.WordBoost.high)
    transcript = aai.Transcriber().transcribe(f"{origin}/drug.wav", config)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    assert "metoprolol" in _said(transcript.text), transcript.text
    assert transcript.json_response["word_boost"] == ["metoprolol"]
    assert transcript.json_response["boost_param"] == "high"


def test_word_boost_through_the_openai_sdk(daemon, speech):
    client = openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="unused-key-0123456789", max_retries=0)
    with open(speech / "drug.wav", "rb") as audio:
        text = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="text",
                                                  extra_body={"word_boost": ["metoprolol"]})
    assert "metoprolol" in _said(text), text
    with open(speech / "drug.wav", "rb") as audio, pytest.raises(openai.BadRequestError, match="boost_param"):
        client.audio.transcriptions.create(model="whisper-1", file=audio, extra_body={"boost_param": "max"})
