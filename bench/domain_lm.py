"""`domain-lm`: WER with a domain's vocabulary, ours beside faster-whisper's, per domain and on general speech.

Each domain (bench/domain_data.py: the Montreal Forced Aligner recordings, generated clinic speech)
brings what a customer would: a list of terms and a text corpus. One run puts every way of using
them side by side:

- faster-whisper (the same tiny.en weights, bench/peers.py) plain, with the terms as `hotwords` and
  as `initial_prompt`;
- ours plain, with the terms as `prompt`, with them as `word_boost` at each `boost_param`, and with a
  custom language model built from the corpus by the project's own `lm build` code (fusion and the
  recheck of near-missed terms).

General speech (the dev set without the recordings) is decoded with each domain's terms or LM, and
with a list of 50 terms of a domain it never mentions (bench/domains/unrelated_boost.txt): a list
that has nothing to find must not cost a customer their ordinary calls. The engine runs in-process
(the daemon's decoders run the same search and scorers), one model loaded once. Tuning uses
`--part dev`; the reported figures use `--part test`, the other half of every set.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Callable

from bench import domain_data, report
from bench.wer import score

CACHE = Path.home() / ".cache" / "async-engine" / "bench"
UNRELATED_TERMS = domain_data.DOMAINS_DIR / "unrelated_boost.txt"
PEER_SYSTEMS = ("plain", "hotwords", "initial_prompt")


def _weights(text: str) -> list[tuple[float, float]]:
    """"0.3:1,0.5:2" -> [(0.3, 1.0), (0.5, 2.0)]: LM weight and word bonus pairs."""
    pairs = []
    for item in text.split(","):
        weight, _, bonus = item.partition(":")
        pairs.append((float(weight), float(bonus or 0.0)))
    return pairs


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.settings import DEFAULT_LM_WEIGHT, DEFAULT_LM_WORD_BONUS

    parser.add_argument("--part", choices=["dev", "test", "all"], default="test",
                        help="half of every clip set: dev to tune on, test to report")
    parser.add_argument("--weights", type=_weights, default=[(float(DEFAULT_LM_WEIGHT), float(DEFAULT_LM_WORD_BONUS))],
                        help="comma-separated WEIGHT:WORD_BONUS pairs for the fusion (default: the served ones)")
    parser.add_argument("--boost", type=_names, default=["low", "default", "high"],
                        help="comma-separated boost_param values to run word_boost at ('' for none)")
    parser.add_argument("--peer", type=_names, default=list(PEER_SYSTEMS),
                        help=f"faster-whisper rows, comma-separated from {','.join(PEER_SYSTEMS)} ('' for none)")
    parser.add_argument("--no-prompt", dest="prompt", action="store_false", help="skip our row with the terms as prompt")
    parser.add_argument("--beams", type=lambda t: [int(b) for b in t.split(",")], default=[5],
                        help="comma-separated beam widths")
    parser.add_argument("--general-limit", type=int, help="first N general clips of the part only")
    parser.add_argument("--order", type=int, default=3, help="n-gram order of the domain LMs")
    parser.add_argument("--recheck", choices=["on", "off", "both"], default="on",
                        help="LM rows with the terms' recheck (as served), without it (fusion alone), or both")


def terms_text(terms: list[str]) -> str:
    """A term list as one text, the way hotwords, initial_prompt and our prompt are given it."""
    return ", ".join(terms) + "."


@dataclasses.dataclass(frozen=True)
class _Setting:
    """How one system decodes with one list of terms (and that list's domain LM, where it has one)."""

    options: object = None  # our DecodeOptions
    scorers: tuple = ()
    domain_terms: object = None
    peer: tuple[tuple[str, str], ...] | None = None  # faster-whisper's transcribe options; None for ours


def domain_lm(args: argparse.Namespace) -> None:
    from engine.decoding.options import DecodeOptions
    from engine.lm.domain_terms import load_domain_terms
    from engine.lm.fusion import LanguageModelFusion
    from engine.lm.toolkit import build_model, load_language_model
    from engine.transcriber import Transcriber

    domains = [domain_data.forced_alignment(args.eval_dir), domain_data.clinic(CACHE / "clinic")]
    unrelated = domain_data.read_lines(UNRELATED_TERMS)
    general = domain_data.general(args.eval_dir)
    pick = (lambda clips: list(clips)) if args.part == "all" else (lambda clips: domain_data.split(clips, args.part))
    sets = {d.name: pick(d.clips) for d in domains}
    sets["general"] = pick(general)[: args.general_limit]
    audio = {name: [domain_data.load_clip_audio(c.audio) for c in clips] for name, clips in sets.items()}
    models = {}
    for domain in domains:
        out = CACHE / "lm" / f"{domain.name}.{args.order}.klm"
        out.parent.mkdir(parents=True, exist_ok=True)
        build_model(domain.lm_corpus, out, args.order, progress=False)
        models[domain.name] = load_language_model(out)
    transcriber = Transcriber.load(args.model, beam_size=max(args.beams))
    texts = transcriber.tokenizer.token_texts
    lm_terms = {d.name: load_domain_terms(CACHE / "lm" / f"{d.name}.{args.order}.klm", transcriber.tokenizer)
                for d in domains}
    base = transcriber.search_config
    peers: dict[int, object] = {}
    # (column, clip set, terms, the domain whose LM goes with them or None)
    columns = [(d.name, d.name, d.boost_terms, d.name) for d in domains]
    columns += [(f"general, {d.name} terms", "general", d.boost_terms, d.name) for d in domains]
    columns.append(("general, 50 unrelated terms", "general", unrelated, None))
    rows = ["| beam | system | " + " | ".join(f"{c[0]} WER %" for c in columns) + " | wall s |",
            "|---:|---|" + "---:|" * len(columns) + "---:|"]

    def decode(setting: _Setting, beam: int, name: str) -> list[str]:
        if setting.peer is not None:
            if beam not in peers:
                from bench.peers import FasterWhisperRunner

                peers[beam] = FasterWhisperRunner(args.model, beam)
            return [peers[beam].transcribe(a, **dict(setting.peer)) for a in audio[name]]
        transcriber.search_config = dataclasses.replace(base, beam_size=beam, scorers=setting.scorers,
                                                        domain_terms=setting.domain_terms)
        return [t.text for t in transcriber.transcribe_many(audio[name], options=setting.options)]

    def run(label: str, beam: int, setting_for: Callable[[list[str], str | None], _Setting | None]) -> None:
        started = time.monotonic()
        cells, done = [], {}
        for _, name, terms, lm in columns:
            setting = setting_for(terms, lm)
            if setting is None:
                cells.append("–")
                continue
            if (name, setting) not in done:  # a setting that ignores the terms decodes general speech once
                hyps = decode(setting, beam, name)
                done[(name, setting)] = 100 * score([c.reference for c in sets[name]], hyps).overall.wer
            cells.append(f"{done[(name, setting)]:.2f}")
        rows.append(f"| {beam} | {label} | " + " | ".join(cells) + f" | {time.monotonic() - started:.0f} |")
        print(rows[-1], flush=True)

    plain = DecodeOptions()
    for beam in args.beams:
        for system in args.peer:
            run(f"faster-whisper {system}", beam,
                lambda terms, lm, s=system: _Setting(peer=() if s == "plain" else ((s, terms_text(terms)),)))
        run("ours, plain", beam, lambda terms, lm: _Setting(options=plain))
        if args.prompt:
            run("ours, terms as prompt", beam, lambda terms, lm: _Setting(options=DecodeOptions(prompt=terms_text(terms))))
        for strength in args.boost:
            run(f"ours, word_boost ({strength})", beam,
                lambda terms, lm, s=strength: _Setting(options=DecodeOptions(word_boost=tuple(terms), boost_param=s)))
        for weight, bonus in args.weights:
            fusion = lambda lm, w=weight, b=bonus: (LanguageModelFusion(models[lm], texts, w, b),) if w else ()  # noqa: E731
            if args.recheck in ("off", "both") and weight:
                run(f"ours, custom LM (weight {weight:g}, word bonus {bonus:g}), fusion alone", beam,
                    lambda terms, lm, f=fusion: _Setting(options=plain, scorers=f(lm)) if lm else None)
            if args.recheck in ("on", "both"):
                run(f"ours, custom LM (weight {weight:g}, word bonus {bonus:g}), fusion + recheck", beam,
                    lambda terms, lm, f=fusion: _Setting(options=plain, scorers=f(lm), domain_terms=lm_terms[lm])
                    if lm else None)
    counts = ", ".join(f"{name} {len(clips)}" for name, clips in sets.items())
    notes = [f"part {args.part} of each set (bench/domain_data.split; clips: {counts}); model {args.model}; ours "
             f"in-process on the CPU, faster-whisper {_peer_version()} (int8, 2 threads, language en) on the same "
             f"weights and audio",
             "terms: bench/domains/*/boost.txt, given to faster-whisper's hotwords and initial_prompt and to our "
             "prompt as one text ('Montreal Forced Aligner, forced aligner, ....'), to word_boost as the list; "
             "custom LMs of order "
             f"{args.order} built by engine.lm.toolkit from bench/domains/*/lm.txt (never the test references), "
             "with the rare terms `lm build` writes beside them for the recheck",
             "general: the part's dev-set clips without mfa_selfrecorded, decoded with each domain's terms (or "
             "LM) and with bench/domains/unrelated_boost.txt (50 software terms, none of them spoken)"]
    text = report.dated_section(f"{args.model}, custom vocabulary: word_boost, prompt and custom LM", notes,
                                "\n".join(rows))
    print(text)
    report.append(args.results, text)


def _peer_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("faster-whisper")
