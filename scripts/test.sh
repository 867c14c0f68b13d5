#!/usr/bin/env bash
# The project's test command: set up (or update) the venv, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -x -k dds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
# No test collected is pytest's exit 5: non-zero, so it fails here and in CI, as it should.
exec "${D3P_VENV:-.venv}/bin/python" -m pytest -q tests "$@"
