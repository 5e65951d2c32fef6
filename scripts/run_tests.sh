#!/usr/bin/env bash
# README command 2: set up, make sure the default model exists (hub or local training: the notebooks need it),
# then run the whole test suite, including the end-to-end execution of the solutions notebook (nbmake) and
# the check that every exercise stub is graded "not implemented yet"; first the lint and format checks (ruff,
# configured in pyproject.toml); and the non-slow tests once more with the lowest dependency versions
# pyproject.toml declares (scripts/test_lowest_versions.sh; LOWEST_VERSIONS=0 skips it). Extra arguments go to
# both pytest runs of the main environment.
#
# The machine's two cores are kept busy: while the default model trains (one torch thread), the other core sets
# up the lowest-versions environment, runs the non-slow tests there, then the non-slow tests here (one thread
# each). The slow tests (training, notebooks: they need the model) run last, on both cores. No non-slow test
# reads the default model, so none sees it half-trained.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
# in a log (CI) a progress bar every 10 s is plenty
[ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
start=$(date +%s)
logs=$(mktemp -d)
echo "[tests] ruff: lint and format checks"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "[tests] obtaining the default model in the background (cached after the first run; log below when done)"
OMP_NUM_THREADS=1 .venv/bin/python -m part52_grokking_and_modular_arithmetic fetch >"$logs/fetch.log" 2>&1 &
fetch_pid=$!

status=0
(
    rc=0  # a failure of the lowest-versions run still lets the main environment's tests run and report
    if [ "${LOWEST_VERSIONS:-1}" != 0 ]; then
        echo "[tests] the non-slow tests with the lowest declared dependency versions (.venv-lowest)"
        bash scripts/test_lowest_versions.sh || rc=1
    fi
    echo "[tests] the non-slow tests (one torch thread, beside the training)"
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests -m "not slow" "$@" || rc=1
    exit $rc
) || status=1

if wait "$fetch_pid"; then
    tail -n 12 "$logs/fetch.log"
    echo "[tests] model ready after $(($(date +%s) - start)) s"
else
    cat "$logs/fetch.log"
    echo "[tests] obtaining the default model failed"
    exit 1
fi

echo "[tests] the slow tests and the solutions notebook (nbmake)"
.venv/bin/python -m pytest tests --nbmake solutions --nbmake-timeout=900 -m slow "$@" || status=1
echo "[tests] total $(($(date +%s) - start)) s"
exit $status
