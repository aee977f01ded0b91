#!/usr/bin/env bash
# The test command: set up (idempotent), add the test-only dependencies, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
.venv/bin/python -m pip install --quiet -r requirements-test.txt
exec .venv/bin/python -m pytest -q "$@"
