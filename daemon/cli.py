"""`async-engine` entry point: the engine's commands plus `serve`."""

from __future__ import annotations

import argparse
import sys

from engine import cli as engine_cli


def _serve(args: argparse.Namespace, _settings) -> int:
    from daemon.config import DaemonConfig
    from daemon.serve import serve

    return serve(DaemonConfig.from_env())


def main(argv: list[str] | None = None) -> int:
    parser = engine_cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.add_parser("serve", help="run the HTTP server (settings from the environment)")
    serve.set_defaults(run=_serve)
    return engine_cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
