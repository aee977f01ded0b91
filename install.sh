#!/usr/bin/env bash
# Fresh-machine set-up: a virtualenv in .venv with every dependency, the default model (tiny.en)
# converted into the models directory, then a first transcription of FILE (if given) to prove it,
# or, with --serve, the server on port 9999.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: 2.13.0 is the CPU build on this machine's disk; anything else downloads GBs.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e .
# KenLM's lmplz and build_binary for `async-engine lm build` (cached; says so and goes on where they cannot be built).
packaging/build-kenlm-tools .venv/bin
.venv/bin/async-engine models install "${ASYNC_ENGINE_MODEL:-tiny.en}"
# The speaker encoder for speaker labels (weights from PyPI's Resemblyzer wheel; engine/speakers/store.py).
.venv/bin/async-engine models install speakers
if [ "${1:-}" = "--serve" ]; then
    exec .venv/bin/async-engine serve
elif [ $# -gt 0 ]; then
    .venv/bin/async-engine transcribe "$@"
fi
