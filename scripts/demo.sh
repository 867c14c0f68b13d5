#!/usr/bin/env bash
# The d3p ROS 2 demo: refiner node + replay + live evaluator, each in its own process, DDS on
# loopback only (the network rule is applied inside d3p_ros.demo), exits 0 with the
# before/after MPJPE summary.
#
#   scripts/demo.sh                 # GENERATED sample (never Human3.6M), tiny model
#   scripts/demo.sh FILE.npz        # replay a predictions file (or set D3P_DATA)
#   scripts/demo.sh --help          # all options (--model, --people, --seconds, --mode ...)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${D3P_VENV:-$repo/.venv}/bin/python"
[ -x "$py" ] || { echo "demo: no venv at ${D3P_VENV:-$repo/.venv}; run scripts/setup.sh" >&2; exit 1; }
cd "$repo"
exec "$py" -m d3p_ros.demo "$@"
