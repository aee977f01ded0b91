"""`domain-lm`: WER with and without a custom language model and word_boost, per domain and on general speech.

Each domain (bench/domain_data.py: the Montreal Forced Aligner recordings, generated clinic speech)
brings its own LM corpus, built here with the project's own `lm build` code, and its own boost terms.
The engine runs in-process (the daemon's decoders run the same search and scorers), one model
loaded once; each configuration only swaps the scorers of the search. General speech is decoded
with each domain's LM too, since a customer's LM must not cost them their ordinary calls.
Tuning uses `--part dev`; the reported figures use `--part test`, the other half of every set.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path


from bench import domain_data, report
from bench.wer import score

CACHE = Path.home() / ".cache" / "async-engine" / "bench"


def _weights(text: str) -> list[tuple[float, float]]:
    """"0.3:1,0.5:2" -> [(0.3, 1.0), (0.5, 2.0)]: LM weight and word bonus pairs."""
    pairs = []
    for item in text.split(","):
        weight, _, bonus = item.partition(":")
        pairs.append((float(weight), float(bonus or 0.0)))
    return pairs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from engine.settings import DEFAULT_LM_WEIGHT, DEFAULT_LM_WORD_BONUS

    parser.add_argument("--part", choices=["dev", "test", "all"], default="test",
                        help="half of every clip set: dev to tune on, test to report")
    parser.add_argument("--weights", type=_weights, default=[(float(DEFAULT_LM_WEIGHT), float(DEFAULT_LM_WORD_BONUS))],
                        help="comma-separated WEIGHT:WORD_BONUS pairs for the fusion (default: the served ones)")
    parser.add_argument("--boost", type=lambda t: t.split(",") if t else [], default=["default"],
                        help="comma-separated boost_param values to run word_boost at ('' for none)")
    parser.add_argument("--beams", type=lambda t: [int(b) for b in t.split(",")], default=[5],
                        help="comma-separated beam widths")
    parser.add_argument("--general-limit", type=int, help="first N general clips of the part only")
    parser.add_argument("--order", type=int, default=3, help="n-gram order of the domain LMs")
    parser.add_argument("--recheck", choices=["on", "off", "both"], default="both",
                        help="LM runs with the terms' recheck (as served), without it (fusion alone), or both")


def _decode(transcriber, clips: list, options) -> list[str]:
    audios = [domain_data.load_clip_audio(c.audio) for c in clips]
    return [t.text for t in transcriber.transcribe_many(audios, options=options)]


def domain_lm(args: argparse.Namespace) -> None:
    from engine.decoding.options import DecodeOptions
    from engine.lm.domain_terms import load_domain_terms
    from engine.lm.fusion import LanguageModelFusion
    from engine.lm.toolkit import build_model, load_language_model
    from engine.transcriber import Transcriber

    domains = [domain_data.forced_alignment(args.eval_dir), domain_data.clinic(CACHE / "clinic")]
    general = domain_data.general(args.eval_dir)
    pick = (lambda clips: list(clips)) if args.part == "all" else (lambda clips: domain_data.split(clips, args.part))
    sets = {d.name: pick(d.clips) for d in domains}
    sets["general"] = pick(general)[: args.general_limit]
    models = {}
    for domain in domains:
        out = CACHE / "lm" / f"{domain.name}.{args.order}.klm"
        out.parent.mkdir(parents=True, exist_ok=True)
        build_model(domain.lm_corpus, out, args.order, progress=False)
        models[domain.name] = load_language_model(out)
    transcriber = Transcriber.load(args.model, beam_size=max(args.beams))
    texts = transcriber.tokenizer.token_texts
    terms = {d.name: load_domain_terms(CACHE / "lm" / f"{d.name}.{args.order}.klm", transcriber.tokenizer)
             for d in domains}
    plain = DecodeOptions()
    rows = ["| beam | system | " + " | ".join(f"{d.name} WER %" for d in domains)
            + " | general WER % (with each domain's LM or terms) | wall s |",
            "|---:|---|" + "---:|" * len(domains) + "---|---:|"]

    def run(label: str, beam: int, scorers_for, options_for, terms_for=lambda d: None) -> None:
        started = time.monotonic()
        domain_wer, general_wer = [], []
        for domain in domains:
            transcriber.search_config = dataclasses.replace(base, beam_size=beam, scorers=scorers_for(domain),
                                                            domain_terms=terms_for(domain))
            for name, wers in ((domain.name, domain_wer), ("general", general_wer)):
                if (name == "general" and not scorers_for(domain) and terms_for(domain) is None
                        and options_for(domain) == plain and general_wer):
                    wers.append(general_wer[0])  # the baseline's general speech does not depend on the domain
                    continue
                clips = sets[name]
                hyps = _decode(transcriber, clips, options_for(domain))
                wers.append(100 * score([c.reference for c in clips], hyps).overall.wer)
        wall = time.monotonic() - started
        general_text = " / ".join(f"{w:.2f}" for w in general_wer)
        rows.append(f"| {beam} | {label} | " + " | ".join(f"{w:.2f}" for w in domain_wer)
                    + f" | {general_text} | {wall:.0f} |")
        print(rows[-1], flush=True)

    base = transcriber.search_config
    for beam in args.beams:
        run("no LM", beam, lambda d: (), lambda d: plain)
        for weight, bonus in args.weights:
            fusion = lambda d, w=weight, b=bonus: (LanguageModelFusion(models[d.name], texts, w, b),) if w else ()  # noqa: E731
            if args.recheck in ("off", "both") and weight:
                run(f"LM weight {weight:g}, word bonus {bonus:g}, fusion alone", beam, fusion, lambda d: plain)
            if args.recheck in ("on", "both"):
                run(f"LM weight {weight:g}, word bonus {bonus:g}, fusion + recheck of near-missed terms", beam, fusion,
                    lambda d: plain, lambda d: terms[d.name])
        for strength in args.boost:
            run(f"word_boost ({strength})", beam, lambda d: (),
                lambda d, s=strength: DecodeOptions(word_boost=tuple(d.boost_terms), boost_param=s))
    counts = ", ".join(f"{name} {len(clips)}" for name, clips in sets.items())
    notes = [f"part {args.part} of each set (bench/domain_data.split; clips: {counts}); engine in-process on the "
             f"CPU, model {args.model}; domain LMs of order {args.order} built by engine.lm.toolkit from "
             f"bench/domains/*/lm.txt (never the test references), with the rare terms `lm build` writes beside "
             f"them for the recheck (engine/lm/domain_terms.py); word_boost terms from bench/domains/*/boost.txt",
             "general WER is the dev set without mfa_selfrecorded, decoded with the forced-alignment LM or terms "
             "and then with the clinic ones"]
    text = report.dated_section(f"{args.model}, custom language model and word_boost", notes, "\n".join(rows))
    print(text)
    report.append(args.results, text)

