"""`async-engine` entry point: the engine's commands plus `serve` and `worker`."""

from __future__ import annotations

import argparse
import sys

from engine import cli as engine_cli


def _serve(args: argparse.Namespace, _settings) -> int:
    from daemon.config import DaemonConfig
    from daemon.serve import serve

    return serve(DaemonConfig.from_env())


def _worker(args: argparse.Namespace, _settings) -> int:
    from daemon.config import DaemonConfig
    from daemon.shared.worker_main import run_worker

    return run_worker(DaemonConfig.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = engine_cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.add_parser("serve", help="run the HTTP server (settings from the environment)")
    serve.set_defaults(run=_serve)
    worker = commands.add_parser("worker", help="run a worker node: take jobs from Redis (REDIS_URL), no HTTP API")
    worker.set_defaults(run=_worker)
    return engine_cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
