#!/usr/bin/env bash
# The test command: set up (idempotent), add the test-only dependencies, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
# Debian packages the tests use, installed as root when missing; elsewhere those tests skip and say why:
# shared-mode tests run a real redis-server of their own; the image tests (tests/test_docker.py) start
# Debian's dockerd (docker.io) and docker-compose, and build their base image with debootstrap.
missing=()
for need in redis-server:redis-server dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap; do
    command -v "${need%%:*}" >/dev/null || missing+=("${need#*:}")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
        || echo "run-tests: could not install ${missing[*]}; the tests that need them will skip" >&2
fi
.venv/bin/python -m pip install --quiet -r requirements-test.txt
# Resemblyzer itself, only so tests/test_speakers.py can hold our speaker encoder to the package's own;
# without its dependencies (webrtcvad's source build): librosa and webrtcvad-wheels come from the list above.
.venv/bin/python -m pip install --quiet --no-deps Resemblyzer==0.1.4
exec .venv/bin/python -m pytest -q "$@"
