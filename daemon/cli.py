"""`async-engine` entry point: the engine's commands plus `serve` and `worker`."""

from __future__ import annotations

import argparse
import sys

from engine import cli as engine_cli


def _config():
    """The daemon's settings, and the language model loaded once here when this node decodes: a bad
    CUSTOM_LANG_MODEL_PATH stops `serve` or `worker` at start, named, before any process is started."""
    from daemon.config import DaemonConfig

    config = DaemonConfig.from_env()
    if config.engine.language_model is not None and not config.skip_decoder:
        from engine.lm.toolkit import load_language_model

        load_language_model(config.engine.language_model)
    return config


def _serve(args: argparse.Namespace, _settings) -> int:
    from daemon.serve import serve

    return serve(_config())


def _worker(args: argparse.Namespace, _settings) -> int:
    from daemon.shared.worker_main import run_worker

    return run_worker(_config())


def main(argv: list[str] | None = None) -> int:
    parser = engine_cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.add_parser("serve", help="run the HTTP server (settings from the environment)")
    serve.set_defaults(run=_serve, engine_settings=False)
    worker = commands.add_parser("worker", help="run a worker node: take jobs from Redis (REDIS_URL), no HTTP API")
    worker.set_defaults(run=_worker, engine_settings=False)
    return engine_cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
