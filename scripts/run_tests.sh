#!/usr/bin/env bash
# README command 2: set up, then the whole test suite: the lint and format checks (ruff, configured in
# pyproject.toml), the non-slow tests, the slow ones (training runs, the notebooks, the Colab simulation), the
# end-to-end execution of the solutions notebook on the trained default model (nbmake), and the tests that
# exercise the libraries once more with the lowest dependency versions pyproject.toml declares
# (scripts/test_lowest_versions.sh; LOWEST_VERSIONS=0 skips it). Extra arguments go to the main pytest runs.
#
# The machine's two cores run two chains side by side, each process on one torch thread:
#   1. obtain the default model (hub, else local training; cached after the first time), then the tests that
#      read it (marker `model`, and the nbmake run of the solutions notebook);
#   2. the lowest-versions run, the non-slow tests, then the slow tests that do not read the default model
#      (at a lower priority: chain 1 is the critical path).
# No test of chain 2 reads the default model, so none sees it half-trained.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
echo "[tests] set up in $(($(date +%s) - start)) s"
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# in a log (CI) a progress bar every 10 s is plenty
[ -t 2 ] || export TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
logs=$(mktemp -d)
echo "[tests] ruff: lint and format checks"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "[tests] chain 1 (log shown when it ends): the default model, then the tests that read it"
(
    if ! .venv/bin/python -m part52_grokking_and_modular_arithmetic fetch; then
        echo "[tests] obtaining the default model failed"
        exit 1
    fi
    echo "[tests] model ready after $(($(date +%s) - start)) s"
    .venv/bin/python -m pytest tests --nbmake solutions --nbmake-timeout=900 -m model --durations=5 "$@"
) >"$logs/chain1.log" 2>&1 &
chain1=$!
# Chain 1 is the longer one (8-10 min of training, then the notebook): chain 2 yields to it wherever it runs more
# than one process at a time (pytest and a notebook kernel, pip, a command under test), so that the training keeps
# its core. Chain 1 was started before this line and keeps the default priority.
renice -n 10 -p $$ >/dev/null || true

status=0  # a failing step still lets the others run and report; the script fails at the end
if [ "${LOWEST_VERSIONS:-1}" != 0 ]; then
    echo "[tests] the library tests with the lowest declared dependency versions (.venv-lowest)"
    bash scripts/test_lowest_versions.sh || status=1
fi
echo "[tests] the non-slow tests"
.venv/bin/python -m pytest tests -m "not slow" "$@" || status=1
echo "[tests] the slow tests that do not need the default model"
.venv/bin/python -m pytest tests -m "slow and not model" --durations=10 "$@" || status=1

echo "[tests] waiting for chain 1 ($(($(date +%s) - start)) s so far)"
wait "$chain1" || status=1
echo "----- chain 1: the default model and the tests that read it -----"
cat "$logs/chain1.log"
echo "[tests] total $(($(date +%s) - start)) s"
exit $status
