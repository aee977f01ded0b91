#!/usr/bin/env bash
# The test command: set up (idempotent), add the test-only dependencies, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
# Shared-mode tests run a real redis-server of their own (Debian's package). As root, install it when
# missing; elsewhere those tests skip and say why.
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
        || echo "run-tests: could not install redis-server; the shared-mode tests will skip" >&2
fi
.venv/bin/python -m pip install --quiet -r requirements-test.txt
# Resemblyzer itself, only so tests/test_speakers.py can hold our speaker encoder to the package's own;
# without its dependencies (webrtcvad's source build): librosa and webrtcvad-wheels come from the list above.
.venv/bin/python -m pip install --quiet --no-deps Resemblyzer==0.1.4
exec .venv/bin/python -m pytest -q "$@"
