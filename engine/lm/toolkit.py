"""Custom language models: `async-engine lm build` and `lm info`, and the loader the decoders use.

A model is built from a customer's own text by KenLM's lmplz (modified Kneser-Ney) and build_binary,
after the text has gone through engine.lm.text, the normaliser fusion looks words up with, so that the
model's words are spelled as the decoder's. Counts are read from the model's own header (the ARPA
`\\data\\` section or the binary file's fixed header), so `lm info` works on any KenLM model, not only on
ones built here, and nothing beside the model can go stale. docs/LANGUAGE_MODEL.md has the details.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import kenlm
from tqdm import tqdm

from engine.lm.domain_terms import terms_path, write_terms
from engine.errors import EngineError
from engine.lm.text import corpus_sentences
from engine.settings import SettingsError

# Trigrams: domain corpora are small (thousands of sentences), where 4- and 5-grams are mostly seen
# once and only memorise sentences, growing the model without lowering perplexity on new text; fusion
# scores each word with the few words before it, which a trigram already covers.
DEFAULT_ORDER = 3
MAX_ORDER = 6  # KENLM_MAX_ORDER of both the PyPI query module and the tools built here
TOOLS = ("lmplz", "build_binary")
KENLM_VERSION = "0.3.0"
_FIRST_BLOCK = 64 * 1024
_BAR_MIN_BYTES = 8 << 20  # normalising runs at ~10 MB/s: below this a bar would only flash (and precede a refusal)
# lmplz touches all the sorting memory it is given (-S): 20 % of memory (its own default is 80 %)
# costs seconds and a GB for a page of text, so it gets 16 bytes per corpus byte within these bounds.
_MIN_SORT_MEMORY = 128 << 20
_SORT_MEMORY_SHARE = 0.2
_SORT_BYTES_PER_CORPUS_BYTE = 16

_BINARY_MAGIC = b"mmap lm http://kheafield.com/code format version 5\n\0"
_BINARY_INCOMPLETE = b"mmap lm http://kheafield.com/code incomplete\n"
# lm/binary_format.cc: Sanity (88 bytes: the magic padded to 56, test values), FixedWidthParameters
# (order, probing multiplier, model type, has vocabulary, search version), then one uint64 count per order.
_SANITY_SIZE = 88
_FIXED = struct.Struct("<B3xfIB3xI")
_MODEL_TYPES = ("probing", "probing with rest costs", "trie", "trie, quantized", "trie, compressed pointers",
                "trie, quantized, compressed pointers")
_ARPA_COUNT = re.compile(rb"ngram (\d+)=(\d+)")


class LanguageModelError(EngineError):
    """A corpus or model the LM toolkit cannot use, or a KenLM tool that failed."""

    code = "language_model_error"


@dataclass(frozen=True)
class ModelInfo:
    """What a model's header says: its format and the number of n-grams of each order (1-grams first)."""

    kind: str
    counts: tuple[int, ...]

    @property
    def order(self) -> int:
        return len(self.counts)

    @property
    def vocabulary(self) -> int:
        """Unigrams, including KenLM's <s>, </s> and <unk>."""
        return self.counts[0]


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    sentences: int
    words: int
    oov_words: int

    @property
    def oov_rate(self) -> float:
        return self.oov_words / self.words if self.words else 0.0


def find_tool(name: str) -> Path:
    """A KenLM program: beside this interpreter (the venv's bin, where set-up puts them), on PATH, then
    in packaging/build-kenlm-tools' cache, so that a venv made after the build still finds them."""
    beside = Path(sys.executable).parent / name  # not resolved: a venv's python is a link out of the venv
    on_path = shutil.which(name)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for candidate in (beside, Path(on_path) if on_path else None,
                      cache / "async-engine" / f"kenlm-{KENLM_VERSION}" / "bin" / name):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LanguageModelError(
        f"KenLM's {name} is not installed (it is not in the kenlm Python package): run ./install.sh as root, "
        f"or packaging/build-kenlm-tools, or install the async-engine deb, which ships it"
    )


def _open_text(path: Path, label: str) -> BinaryIO:
    """The file opened once its first block looks like UTF-8 text, so that a binary file is refused
    by name instead of being normalised into a model of noise."""
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise LanguageModelError(f"{label} {path}: no such file") from None
    except IsADirectoryError:
        raise LanguageModelError(f"{label} {path}: is a directory, not a text file") from None
    except OSError as error:
        raise LanguageModelError(f"{label} {path}: cannot be read ({error.strerror})") from None
    first = stream.read(_FIRST_BLOCK)
    stream.seek(0)
    if b"\0" in first:
        stream.close()
        raise LanguageModelError(f"{label} {path}: binary data (NUL bytes), not text")
    try:
        first.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(first) - 3:  # not merely a character cut by the block's end
            stream.close()
            raise LanguageModelError(f"{label} {path}: not UTF-8 text (byte {error.start})") from None
    return stream


def _text_lines(path: Path, label: str, stream: BinaryIO, bar: tqdm | None = None) -> Iterator[str]:
    for number, raw in enumerate(stream, 1):
        if bar is not None:
            bar.update(len(raw))
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LanguageModelError(f"{label} {path}: line {number} is not UTF-8 text") from None


def normalize_corpus(corpus: Path, out: Path, progress: bool = True) -> tuple[int, int]:
    """Writes the corpus as lmplz should read it; returns (sentences, words), refusing a corpus with none."""
    sentences = words = 0
    with _open_text(corpus, "corpus") as stream, out.open("w", encoding="utf-8") as sink:
        size = os.fstat(stream.fileno()).st_size
        with tqdm(total=size, unit="B", unit_scale=True, desc="normalising", file=sys.stderr,
                  disable=not progress or size < _BAR_MIN_BYTES) as bar:
            for sentence in corpus_sentences(_text_lines(corpus, "corpus", stream, bar)):
                sink.write(sentence + "\n")
                sentences += 1
                words += sentence.count(" ") + 1
    if not words:
        raise LanguageModelError(f"corpus {corpus}: no words after normalisation (empty, or only punctuation)")
    return sentences, words


def _sort_memory(corpus_bytes: int) -> str:
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    wanted = max(_MIN_SORT_MEMORY, corpus_bytes * _SORT_BYTES_PER_CORPUS_BYTE)
    return f"{min(wanted, int(total * _SORT_MEMORY_SHARE)) >> 20}M"


def _run_tool(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, errors="replace")
    except OSError as error:
        raise LanguageModelError(f"{argv[0]} could not be started ({error.strerror})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise LanguageModelError(f"{Path(argv[0]).name} failed: {last}")


def _stage(message: str, progress: bool) -> float:
    if progress:
        print(message, file=sys.stderr, flush=True)
    return time.monotonic()


def build_model(corpus: Path, out: Path, order: int = DEFAULT_ORDER, progress: bool = True) -> ModelInfo:
    """Corpus text to a memory-mappable KenLM binary at `out`, replaced only once the build succeeded."""
    if not 2 <= order <= MAX_ORDER:
        raise LanguageModelError(f"--order must be from 2 to {MAX_ORDER}; got {order}")
    lmplz, build_binary = find_tool("lmplz"), find_tool("build_binary")
    if not out.parent.is_dir():
        raise LanguageModelError(f"output {out}: directory {out.parent} does not exist")
    with tempfile.TemporaryDirectory(prefix=".lm-build-", dir=out.parent) as work:
        text, arpa, binary = Path(work, "corpus.txt"), Path(work, "model.arpa"), Path(work, "model.klm")
        sentences, words = normalize_corpus(corpus, text, progress)
        started = _stage(f"lmplz: {order}-gram model of {sentences} sentences, {words} words", progress)
        # --discount_fallback: a small corpus lacks the singletons and doubletons the closed-form
        # Kneser-Ney discounts need, and lmplz would refuse it.
        _run_tool([str(lmplz), "-o", str(order), "-S", _sort_memory(text.stat().st_size), "-T", work + "/",
                   "--discount_fallback", "--text", str(text), "--arpa", str(arpa)])
        info = model_info(arpa)
        _stage(f"lmplz: done in {time.monotonic() - started:.1f} s", progress)
        started = _stage("build_binary: probing hash tables (memory-mapped by the decoders)", progress)
        # probing: the fastest lookups (fusion queries on every word a hypothesis completes), and
        # domain models are small enough that the trie's smaller file buys nothing.
        _run_tool([str(build_binary), "probing", str(arpa), str(binary)])
        _stage(f"build_binary: done in {time.monotonic() - started:.1f} s", progress)
        terms = Path(work, "model.terms")
        with text.open(encoding="utf-8") as normalised, corpus.open(encoding="utf-8", errors="replace") as raw:
            count = write_terms((line.rstrip("\n") for line in normalised), raw, terms)
        _stage(f"terms: {count} rare words and phrases for the recheck (engine/lm/domain_terms.py)", progress)
        binary.replace(out)
        terms.replace(terms_path(out))
    return info


def _header(path: Path) -> ModelInfo:
    """The format and counts of a KenLM model, from its first bytes; raises ValueError saying why not."""
    with path.open("rb") as stream:
        head = stream.read(_FIRST_BLOCK)
        size = os.fstat(stream.fileno()).st_size
    if not head:
        raise ValueError("the file is empty")
    if head.startswith(_BINARY_INCOMPLETE):
        raise ValueError("a KenLM binary whose build did not finish")
    if head.startswith(_BINARY_MAGIC[:-2]):
        if not head.startswith(_BINARY_MAGIC) or len(head) < _SANITY_SIZE + _FIXED.size:
            raise ValueError("a KenLM binary of another format version, or truncated")
        order, _multiplier, model_type, _vocabulary, _version = _FIXED.unpack_from(head, _SANITY_SIZE)
        end = _SANITY_SIZE + _FIXED.size + 8 * order
        if not 1 <= order <= MAX_ORDER or model_type >= len(_MODEL_TYPES) or size < end:
            raise ValueError("a KenLM binary with a damaged or truncated header")
        counts = struct.unpack_from(f"<{order}Q", head, _SANITY_SIZE + _FIXED.size)
        return ModelInfo(f"KenLM binary ({_MODEL_TYPES[model_type]})", counts)
    data = head.lstrip()
    while data.startswith(b"#"):  # lmplz --verbose_header
        data = data.partition(b"\n")[2].lstrip()
    if data.startswith(b"\\data\\"):
        counts: list[int] = []
        for line in data.splitlines()[1:]:
            match = _ARPA_COUNT.fullmatch(line.strip())
            if not match:
                break
            if int(match.group(1)) != len(counts) + 1:
                raise ValueError("an ARPA file whose \\data\\ section is out of order")
            counts.append(int(match.group(2)))
        if 1 <= len(counts) <= MAX_ORDER:
            return ModelInfo("ARPA", tuple(counts))
        raise ValueError("an ARPA file without a readable \\data\\ section")
    raise ValueError("neither a KenLM binary nor an ARPA file")


def _kenlm_reason(error: Exception) -> str:
    """KenLM's message without its source location and the C++ condition that failed."""
    text = str(error)
    inner = re.search(r"\((.*)\)\s*$", text, re.S)
    text = inner.group(1) if inner else text
    after = re.search(r"threw \w+(?: because `.*?')?\.\s*(.+)", text, re.S)
    return " ".join((after.group(1) if after else text).split())


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """KenLM's loader writes advice for ARPA files straight to file descriptor 2, around the one line
    a refused model gets; only for the single-threaded CLI (a daemon keeps the advice in its log)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load(path: Path, quiet: bool = False) -> tuple[ModelInfo, kenlm.Model]:
    """Raises ValueError with a reason for any file KenLM cannot load, found before KenLM's loader
    where the header tells (an empty file, not a model, an unfinished binary)."""
    if not path.exists():
        raise ValueError("no such file")
    if not path.is_file():
        raise ValueError("not a regular file")
    try:
        info = _header(path)
    except OSError as error:
        raise ValueError(f"this process cannot read it ({error.strerror})") from None
    config = kenlm.Config()
    config.load_method = kenlm.LoadMethod.LAZY  # binary: mmapped, pages shared by every decoder process
    config.show_progress = False
    try:
        with _stderr_silenced() if quiet else contextlib.nullcontext():
            model = kenlm.Model(str(path), config)
    except (OSError, RuntimeError, ValueError) as error:
        raise ValueError(_kenlm_reason(error)) from None
    if model.order != info.order:
        raise ValueError(f"its header says order {info.order}, KenLM loaded order {model.order}")
    return info, model


def load_language_model(path: Path, variable: str = "CUSTOM_LANG_MODEL_PATH") -> kenlm.Model:
    """The model the setting `variable` names, loaded once per process; any failure is a SettingsError
    naming the variable and the path, so that a daemon stops at start instead of at the first request."""
    try:
        return _load(Path(path))[1]
    except ValueError as error:
        raise SettingsError(f"{variable}={path}: not a usable KenLM language model: {error}") from None


def model_info(path: Path) -> ModelInfo:
    """The header of a model `lm info` was pointed at (not loaded)."""
    try:
        return _header(path)
    except FileNotFoundError:
        raise LanguageModelError(f"model {path}: no such file") from None
    except OSError as error:
        raise LanguageModelError(f"model {path}: cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise LanguageModelError(f"model {path}: {error}") from None


def load_for_info(path: Path) -> tuple[ModelInfo, kenlm.Model]:
    """`lm info`'s model: loaded as the decoders would, so that info also proves the file usable."""
    try:
        return _load(path, quiet=True)
    except ValueError as error:
        raise LanguageModelError(f"model {path}: not a usable KenLM language model: {error}") from None


def perplexity(model: kenlm.Model, text: Path) -> Perplexity:
    """Per-token perplexity over the whole text (each sentence's words and its </s>), normalised as the
    corpus was, so that it measures the model on what the decoder would ask of it."""
    total = 0.0
    sentences = words = oov = 0
    with _open_text(text, "text") as stream:
        for sentence in corpus_sentences(_text_lines(text, "text", stream)):
            for log10, _length, unknown in model.full_scores(sentence, bos=True, eos=True):
                total += log10
                oov += unknown
            sentences += 1
            words += sentence.count(" ") + 1
    if not words:
        raise LanguageModelError(f"text {text}: no words after normalisation")
    return Perplexity(10 ** (-total / (words + sentences)), sentences, words, oov)
