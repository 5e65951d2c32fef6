#!/usr/bin/env bash
# README command 2: set up, make sure the default model exists (hub or local training: the notebooks need it),
# then run the whole test suite, including the end-to-end execution of the solutions notebook (nbmake) and
# the check that every exercise stub is graded "not implemented yet". Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
# in a log (CI) a progress bar every 10 s is plenty
[ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
start=$(date +%s)
echo "[tests] obtaining the default model (cached after the first run)"
.venv/bin/python -m part52_grokking_and_modular_arithmetic fetch
echo "[tests] model ready after $(( $(date +%s) - start )) s"
.venv/bin/python -m pytest tests --nbmake solutions --nbmake-timeout=900 "$@"
echo "[tests] total $(( $(date +%s) - start )) s"
