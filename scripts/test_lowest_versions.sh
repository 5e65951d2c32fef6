#!/usr/bin/env bash
# Run the tests that exercise the libraries' APIs once with the LOWEST versions pyproject.toml declares, so that
# every floor there is true: TransformerLens (model, layouts, hooks and caches, the last-position autograd),
# einops / jaxtyping / beartype (every annotated call is checked), plotly, huggingface_hub (the hub client and its
# faults), nbformat / nbclient / nbconvert / jupytext / latex2mathml / ipykernel (notebooks and the report), tqdm
# and torch's archive format. The rest of the suite tests the package's own logic; it runs in .venv (latest
# versions). Set LOWEST_TESTS to choose other test files.
#
# A separate virtual environment (.venv-lowest, git-ignored; VENV=... to move it) gets torch the way
# scripts/setup.sh installs it (torch is the one dependency not pinned to its floor: its CPU build comes from
# the machine), then the package with its test and notebook extras, every other direct dependency pinned
# to its declared floor: each `name>=X` of [project] dependencies and of the extras becomes `name==X` in a
# pip constraints file (a requirement without a floor is an error: every dependency must declare one).
# Dependencies of dependencies are left to the installer (uv, else pip). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-lowest}
export VENV
start=$(date +%s)

# torch exactly as setup.sh installs it (a CPU build where one is on disk), without the package itself
SETUP_ONLY_TORCH=1 bash scripts/setup.sh
PY="$VENV/bin/python"

constraints="$VENV/lowest-constraints.txt"
"$PY" - "$constraints" <<'EOF'
import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
requirements = list(project["dependencies"])
for extra in ("test", "notebooks"):
    requirements += project["optional-dependencies"][extra]
pins, missing = {}, []
for req in requirements:
    name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)
    if name.lower() == "torch":
        continue  # installed like scripts/setup.sh does
    floor = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", req)
    if floor is None:
        missing.append(req)
        continue
    pins[name.lower().replace("_", "-")] = floor.group(1)
if missing:
    sys.exit(f"[lowest] these requirements in pyproject.toml declare no lower bound (add one): {missing}")
with open(sys.argv[1], "w") as f:
    f.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
print("[lowest] floors:", ", ".join(f"{n}=={v}" for n, v in sorted(pins.items())))
EOF

echo "[lowest] installing the package with every dependency at its floor"
SETUP_CONSTRAINTS="$constraints" bash scripts/setup.sh  # the same installer as .venv's (uv, else pip)
# what was installed must be the floors (a constraint the installer could not honour would have failed above)
"$PY" - "$constraints" <<'EOF'
import sys
from importlib.metadata import version

from packaging.version import Version

wrong = []
for line in open(sys.argv[1]):
    name, want = line.strip().split("==")
    if Version(version(name)) != Version(want):
        wrong.append(f"{name} {version(name)} (wanted {want})")
if wrong:
    sys.exit(f"[lowest] not at their floors: {wrong}")
import torch

print(f"[lowest] installed at the floors; torch {torch.__version__}")
EOF
echo "[lowest] environment ready after $(( $(date +%s) - start )) s"

LOWEST_TESTS=${LOWEST_TESTS:-"test_model_and_layout test_last_position test_analysis test_fourier test_dynamics test_plotting test_hub_faults test_report test_notebooks test_run_data test_integrity"}
files=()
for name in $LOWEST_TESTS; do files+=("tests/$name.py"); done
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m pytest "${files[@]}" -m "not slow" -q "$@"
echo "[lowest] total $(( $(date +%s) - start )) s"
