#!/usr/bin/env bash
# The test command of the README and of CI (.ci/run runs exactly this, in a brand-new virtual environment).
# Installs the package with the pinned stack (requirements/constraints.txt); installs Debian's Chromium for
# tests/test_tensorboard_browser.py when it is missing and apt-get can (bounded in time; never fails the run: that
# test is then skipped); checks lint, formatting and types; runs pytest.
# Arguments go to pytest: `bash scripts/test.sh -q tests/test_cli.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -c requirements/constraints.txt -e ".[test]"

if [ -z "${CHROME_BIN:-}" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
  && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  echo "scripts/test.sh: installing Debian's chromium for the TensorBoard browser test (apt-get, at most 10 min)"
  if ! { timeout 180 $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive timeout 420 $sudo apt-get install -y -qq chromium; } >/dev/null 2>&1; then
    echo "scripts/test.sh: could not install chromium; tests/test_tensorboard_browser.py will be skipped"
  fi
fi

echo "scripts/test.sh: ruff check, ruff format --check, mypy"
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy lightning_saliency
python3 -m pytest "$@"
