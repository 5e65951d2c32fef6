#!/usr/bin/env bash
# README command 2: set up, make sure the default model exists (hub or local training: the notebooks need it),
# then run the whole test suite, including the end-to-end execution of the solutions notebook (nbmake) and
# the check that every exercise stub is graded "not implemented yet"; first the lint and format checks (ruff, configured
# in pyproject.toml), last the non-slow tests once more with the lowest dependency versions pyproject.toml declares
# (scripts/test_lowest_versions.sh; LOWEST_VERSIONS=0 skips it). Extra arguments go to the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
# in a log (CI) a progress bar every 10 s is plenty
[ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
start=$(date +%s)
echo "[tests] ruff: lint and format checks"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[tests] obtaining the default model (cached after the first run)"
.venv/bin/python -m part52_grokking_and_modular_arithmetic fetch
echo "[tests] model ready after $(( $(date +%s) - start )) s"
.venv/bin/python -m pytest tests --nbmake solutions --nbmake-timeout=900 "$@"
if [ "${LOWEST_VERSIONS:-1}" != 0 ]; then
    echo "[tests] the non-slow tests with the lowest declared dependency versions (.venv-lowest)"
    bash scripts/test_lowest_versions.sh
fi
echo "[tests] total $(( $(date +%s) - start )) s"
