#!/usr/bin/env bash
# README command 1: set up, obtain the model (hub, else train locally), execute the solutions notebook and
# write a self-contained HTML report with every figure. Extra arguments go to the `report` command
# (see: .venv/bin/python -m part52_grokking_and_modular_arithmetic report --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m part52_grokking_and_modular_arithmetic report "$@"
