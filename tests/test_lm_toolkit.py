"""`async-engine lm build` / `lm info` with KenLM's real lmplz and build_binary, and the model loader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import EngineError
from engine.lm.text import corpus_sentences
from engine.lm.toolkit import LanguageModelError, _run_tool, find_tool, load_language_model
from engine.settings import SettingsError

CLI = [sys.executable, "-m", "engine.cli"]

CORPUS = """\
The Montreal Forced Aligner aligns speech with its transcript. Forced alignment finds where each word starts.
The aligner needs an acoustic model and a pronunciation dictionary.
A pronunciation dictionary maps every word to its phones.
The Montreal Forced Aligner writes a TextGrid for every utterance.
Praat opens the TextGrid that the aligner wrote.
Kaldi trains the acoustic model that the Montreal Forced Aligner uses.
Speaker adaptation improves forced alignment on new speakers.
The acoustic model scores each phone in every frame of the speech.
Forced alignment is easier than speech recognition because the words are known.
The aligner reports the start and end of each phone and each word.
Train an acoustic model on your own corpus before you align it.
The pronunciation dictionary must contain every word of the transcript.
Words missing from the pronunciation dictionary are reported before alignment starts.
The Montreal Forced Aligner runs on Linux, macOS and Windows.
Validate the corpus first, then run the aligner on the speech files.
Each TextGrid holds a word tier and a phone tier.
The phone tier of the TextGrid shows the boundaries that forced alignment found.
Kaldi's feature extraction computes the frames the acoustic model scores.
A better acoustic model gives tighter phone boundaries in forced alignment.
The Montreal Forced Aligner can also generate a pronunciation dictionary with a G2P model.
The G2P model guesses the phones of words that the pronunciation dictionary lacks.
Speaker adaptation runs a second pass of forced alignment.
Praat shows the speech waveform under the TextGrid tiers.
Researchers use forced alignment to measure the duration of each phone.
The aligner writes one TextGrid per speech file into the output directory.
"""
IN_DOMAIN = "The Montreal Forced Aligner writes a TextGrid.\nThe acoustic model scores each phone.\n"
UNRELATED = "Stock markets fell sharply in Tokyo on Monday.\nThe chef cooked a fine dinner for the guests.\n"


def _tools_or_skip() -> None:
    try:
        find_tool("lmplz")
        find_tool("build_binary")
    except LanguageModelError as error:
        pytest.skip(f"KenLM's tools are not installed here (run packaging/build-kenlm-tools): {error}")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("async-engine: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    _tools_or_skip()
    directory = tmp_path_factory.mktemp("lm")
    corpus = directory / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    model = directory / "domain.klm"
    return model, _run("lm", "build", str(corpus), "-o", str(model))


def test_build_writes_a_memory_mappable_binary(built):
    model, done = built
    assert done.returncode == 0, done.stderr
    assert model.read_bytes().startswith(b"mmap lm http://kheafield.com/code format version 5\n")
    assert re.match(rf"{re.escape(str(model))}: order 3, \d+ 1-grams, \d+ 2-grams, \d+ 3-grams$", done.stdout.strip())
    for stage in ("lmplz: 3-gram model of 2[0-9] sentences", "lmplz: done", "build_binary: done"):
        assert re.search(stage, done.stderr), done.stderr
    # no work files left; the terms for the recheck beside the model (engine/lm/domain_terms.py)
    assert sorted(p.name for p in model.parent.iterdir()) == ["corpus.txt", "domain.klm", "domain.klm.terms"]
    assert load_language_model(model).order == 3
    terms = dict(line.split("\t")[::-1] for line in (model.parent / "domain.klm.terms").read_text().splitlines())
    for term in ("Montreal Forced Aligner", "pronunciation dictionary", "TextGrid"):  # counted, as written
        assert terms[term] == str(CORPUS.lower().count(term.lower())), terms
    assert "terms: " in done.stderr


def test_info_prints_order_counts_vocabulary_and_perplexity(built, tmp_path: Path):
    model, build = built
    in_domain, unrelated = tmp_path / "in.txt", tmp_path / "out.txt"
    in_domain.write_text(IN_DOMAIN)
    unrelated.write_text(UNRELATED)
    results = {}
    for name, text in (("in", in_domain), ("out", unrelated)):
        done = _run("lm", "info", str(model), "--text", str(text))
        assert done.returncode == 0, done.stderr
        fields = dict(line.split(": ", 1) for line in done.stdout.splitlines())
        results[name] = fields
    fields = results["in"]
    assert fields["order"] == "3"
    counts = [int(fields[f"{n}-grams"]) for n in (1, 2, 3)]
    assert build.stdout.strip().endswith(f"{counts[0]} 1-grams, {counts[1]} 2-grams, {counts[2]} 3-grams")
    words = {w for sentence in corpus_sentences(CORPUS.splitlines()) for w in sentence.split()}
    assert int(fields["vocabulary"].split()[0]) == counts[0] == len(words) + 3  # <s>, </s>, <unk>
    in_ppl = float(results["in"]["perplexity"].split()[0])
    out_ppl = float(results["out"]["perplexity"].split()[0])
    assert 1 < in_ppl < out_ppl / 5, (in_ppl, out_ppl)
    assert results["in"]["OOV rate"].startswith("0.00 %")
    assert float(results["out"]["OOV rate"].split()[0]) > 50


def test_order_option(tmp_path: Path):
    _tools_or_skip()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    done = _run("lm", "build", str(corpus), "-o", str(tmp_path / "bigram.klm"), "--order", "2", "--quiet")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert load_language_model(tmp_path / "bigram.klm").order == 2
    refused = _run("lm", "build", str(corpus), "-o", str(tmp_path / "x.klm"), "--order", "9")
    assert refused.returncode == 2 and "from 2 to 6" in refused.stderr


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.txt", b"", "no words after normalisation"),
        ("punctuation.txt", b"  ... !!! --- \n\n\t ?? ,, ''\n", "no words after normalisation"),
        ("random.bin", os.urandom(200) + b"\0\0" + os.urandom(4000), "binary data"),
        ("latin1.txt", "café au lait\n".encode("latin-1"), "not UTF-8 text"),
        ("missing.txt", None, "no such file"),
    ],
)
def test_build_refuses_a_bad_corpus(tmp_path: Path, name: str, content: bytes | None, expected: str):
    _tools_or_skip()
    corpus = tmp_path / name
    if content is not None:
        corpus.write_bytes(content)
    line = _one_error_line(_run("lm", "build", str(corpus), "-o", str(tmp_path / "out.klm")))
    assert f"corpus {corpus}" in line and expected in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if content is not None else [])


def test_missing_tools_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(EngineError, match=r"lmplz is not installed.*install\.sh as root.*deb"):
        find_tool("lmplz")


def test_a_failing_tool_shows_its_last_stderr_line():
    with pytest.raises(LanguageModelError, match=r"^sh failed: the last words$"):
        _run_tool(["sh", "-c", "echo first >&2; echo 'the last words' >&2; echo >&2; exit 3"])


@pytest.fixture()
def bad_models(built, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    model = built[0]
    data = model.read_bytes()
    files = {
        "random": (os.urandom(5000), "neither a KenLM binary nor an ARPA file"),
        "truncated": (data[: len(data) // 2], "Binary file has size"),
        "truncated-header": (data[:100], "truncated"),
        "empty": (b"", "the file is empty"),
        "unfinished": (b"mmap lm http://kheafield.com/code incomplete\n" + bytes(200), "did not finish"),
        "arpa-cut": (b"\\data\\\nngram 1=5\nngram 2=9\n\n\\1-grams:\n-1.0\t<unk>\t0\n", "End of file"),
    }
    paths = {}
    for name, (content, reason) in files.items():
        path = tmp_path / f"{name}.klm"
        path.write_bytes(content)
        paths[name] = (path, reason)
    paths["missing"] = (tmp_path / "missing.klm", "no such file")
    paths["directory"] = (tmp_path, "not a regular file")
    return paths


def test_loader_names_the_variable_and_the_path(bad_models):
    for name, (path, reason) in bad_models.items():
        with pytest.raises(SettingsError) as caught:
            load_language_model(path)
        message = str(caught.value)
        assert message.startswith(f"CUSTOM_LANG_MODEL_PATH={path}: ") and reason in message, (name, message)
    path, _ = bad_models["random"]
    with pytest.raises(SettingsError, match=r"^DOMAIN_LM="):
        load_language_model(path, variable="DOMAIN_LM")


def test_info_refuses_a_bad_model_in_one_line(bad_models):
    for name, (path, reason) in bad_models.items():
        line = _one_error_line(_run("lm", "info", str(path)))
        assert line.startswith(f"async-engine: model {path}: ") and reason in line, (name, line)


def test_loader_reads_arpa_too(tmp_path: Path):
    _tools_or_skip()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(corpus_sentences(CORPUS.splitlines())) + "\n")
    arpa = tmp_path / "model.arpa"
    subprocess.run([str(find_tool("lmplz")), "-o", "2", "-S", "64M", "-T", f"{tmp_path}/", "--discount_fallback",
                    "--text", str(corpus), "--arpa", str(arpa)], check=True, capture_output=True)
    model = load_language_model(arpa)
    assert model.order == 2
    assert model.score("the montreal forced aligner", bos=True, eos=False) > model.score("aligner the forced montreal",
                                                                                        bos=True, eos=False)
    done = _run("lm", "info", str(arpa))
    assert done.returncode == 0 and done.stderr == "" and "model: " + str(arpa) + " (ARPA)" in done.stdout
