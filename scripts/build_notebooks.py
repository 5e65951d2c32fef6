#!/usr/bin/env python
"""Build the exercises and solutions notebooks from the single jupytext source.

Source: ``notebooks/grokking_and_modular_arithmetic.py`` (jupytext "percent" format). Reference code sits
between nbgrader-style markers::

    def fft1d(x):
        \"\"\"docstring stays in both notebooks\"\"\"
        ### BEGIN SOLUTION
        return x @ basis.T
        ### END SOLUTION

* solutions notebook: the marker lines are dropped, the code stays;
* exercises notebook: everything from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` becomes
  ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the indentation of the marker (a function body).
  A block at the top level of a cell (a "compute these variables" exercise) instead becomes
  ``# YOUR CODE HERE`` followed by ``name = None`` for every variable the block assigns, so "Run all" reaches
  the grader, which reports the exercise as not done yet.

The install cell's pip source is written once, as ``[project.urls] Repository`` in ``pyproject.toml``: the
marker ``__COURSE_REPOSITORY_URL__`` in the source is replaced by that URL in both notebooks (the build fails
when the URL is missing or still a placeholder, or when no cell carries the marker), and
``__COURSE_VERSION_TAG__`` by ``v<version>`` (``[project] version``), so a notebook installs the package version
it was built with (the release is tagged ``v<version>`` in the repository). ``__COLAB_BADGE__`` (a markdown
line) becomes an "Open in Colab" badge for that notebook on the default branch, built from the same URL (GitHub only;
elsewhere the line says that Colab opens notebooks from GitHub).

A code cell tagged ``solutions-only`` is left out of the exercises notebook; one tagged ``exercises-only`` is
left out of the solutions notebook (cell ids stay stable either way: they are derived from the source cell).

The written notebooks carry no outputs and no execution counts, kernelspec ``python3``, stable cell ids
and nothing else in their metadata (apart from cell tags), so building twice gives byte-identical files.

Usage::

    python scripts/build_notebooks.py           # (re)write exercises/ and solutions/
    python scripts/build_notebooks.py --check   # exit 1 if the committed notebooks differ from a fresh build
                                                # (e.g. after the repository URL in pyproject.toml changed)

Exit status 2 (with the reason) when the source or ``pyproject.toml`` cannot be built from.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = "grokking_and_modular_arithmetic"
SOURCE = REPO_ROOT / "notebooks" / f"{NAME}.py"
EXERCISES = REPO_ROOT / "exercises" / f"{NAME}_exercises.ipynb"
SOLUTIONS = REPO_ROOT / "solutions" / f"{NAME}_solutions.ipynb"

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB_LINES = ("# YOUR CODE HERE", "raise NotImplementedError()")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}
KEPT_CELL_METADATA = ("tags",)
PYPROJECT = REPO_ROOT / "pyproject.toml"
REPOSITORY_MARKER = "__COURSE_REPOSITORY_URL__"
VERSION_MARKER = "__COURSE_VERSION_TAG__"
DEFAULT_BRANCH = "main"  # where the "Open in Colab" badge opens the notebook
COLAB_MARKER = "__COLAB_BADGE__"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
PLACEHOLDER_PATTERN = re.compile(r"YOUR[-_]|<[^>]*>|example\.(com|org)", re.IGNORECASE)


class BuildError(ValueError):
    """The source notebook is malformed (unbalanced solution markers, ...)."""


def _assigned_names(block: list[str], where: str) -> list[str]:
    """Names a top-level solution block assigns (in order of first assignment)."""
    try:
        tree = ast.parse(textwrap.dedent("\n".join(block)))
    except SyntaxError as e:
        raise BuildError(f"{where}: the solution block is not valid Python ({e})") from None
    names: list[str] = []
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, (ast.AnnAssign, ast.AugAssign))
            else []
        )
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and isinstance(leaf.ctx, ast.Store) and leaf.id not in names:
                    names.append(leaf.id)
    return names


def _stub(block: list[str], indent: str, where: str) -> list[str]:
    """What replaces a solution block in the exercises notebook."""
    if indent == "":
        names = _assigned_names(block, where)
        if names:
            return [STUB_LINES[0], *(f"{name} = None" for name in names)]
    return [indent + line for line in STUB_LINES]


def _strip_solution_markers(source: str, *, exercises: bool, where: str) -> str:
    """Apply the solution markers of one code cell for the exercises or the solutions notebook."""
    out: list[str] = []
    block: list[str] | None = None  # lines of the open solution block
    indent = ""
    for lineno, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if block is not None:
                raise BuildError(f"{where}, line {lineno}: nested {BEGIN!r}")
            block, indent = [], line[: len(line) - len(line.lstrip())]
            continue
        if stripped == END:
            if block is None:
                raise BuildError(f"{where}, line {lineno}: {END!r} without {BEGIN!r}")
            if not any(b.strip() for b in block):
                raise BuildError(f"{where}, line {lineno}: empty solution block")
            out.extend(_stub(block, indent, where) if exercises else block)
            block = None
            continue
        if BEGIN in line or END in line:
            raise BuildError(f"{where}, line {lineno}: solution markers must be alone on their line")
        if block is not None:
            block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise BuildError(f"{where}: {BEGIN!r} is never closed")
    return "\n".join(out)


def repository_url(pyproject: Path | None = None) -> str:
    """The course repository's URL, ``[project.urls] Repository`` in ``pyproject`` (default: this checkout's)."""
    pyproject = pyproject or PYPROJECT
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(pyproject, "rb") as f:
        urls = tomllib.load(f).get("project", {}).get("urls", {})
    url = urls.get("Repository", "")
    if not re.fullmatch(r"https://\S+", url) or PLACEHOLDER_PATTERN.search(url):
        raise BuildError(
            f"{pyproject.name}: [project.urls] Repository must be the course repository's https URL "
            f"(the notebooks' install cell pip-installs git+<that URL>), got {url!r}"
        )
    return url


def version_tag(pyproject: Path | None = None) -> str:
    """``v<version>`` from ``[project] version`` of ``pyproject``: the git tag of the release a notebook installs."""
    pyproject = pyproject or PYPROJECT
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(pyproject, "rb") as f:
        version = tomllib.load(f).get("project", {}).get("version", "")
    if not re.fullmatch(r"\d+(\.\d+)*\S*", str(version)):
        raise BuildError(f"{pyproject.name}: [project] version must be a version number, got {version!r}")
    return f"v{version}"


def colab_badge(url: str, ref: str, notebook: Path) -> str:
    """Markdown "Open in Colab" badge for ``notebook`` (a path in the repository) on branch or tag ``ref``."""
    found = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", url)
    if not found:
        return f"(Colab opens notebooks from GitHub; this course's repository is {url}.)"
    owner, repo = found.groups()
    try:
        path = notebook.relative_to(REPO_ROOT).as_posix()
    except ValueError:  # a notebook written elsewhere (tests): its folder and name as in the repository
        path = f"{notebook.parent.name}/{notebook.name}"
    return (
        f"[![Open In Colab]({COLAB_BADGE})](https://colab.research.google.com/github/{owner}/{repo}/blob/{ref}/{path})"
    )


def _cell_id(index: int, cell_type: str) -> str:
    # Ids derive from the cell's position in the source, so both notebooks share them and rebuilds are stable.
    return f"{cell_type[:2]}{index:03d}"


def build_notebook(source_path: Path = SOURCE, *, exercises: bool) -> nbformat.NotebookNode:
    """Read the jupytext source and return the exercises (``exercises=True``) or solutions notebook."""
    src = jupytext.read(source_path, fmt="py:percent")
    url, tag = repository_url(), version_tag()
    # the badge opens the default branch, which always exists; the install cell pins the release tag
    badge = colab_badge(url, DEFAULT_BRANCH, EXERCISES if exercises else SOLUTIONS)
    cells = []
    for index, cell in enumerate(src.cells):
        tags = list(cell.metadata.get("tags", []))
        if exercises and "solutions-only" in tags:
            continue
        if not exercises and "exercises-only" in tags:
            continue
        metadata = {k: cell.metadata[k] for k in KEPT_CELL_METADATA if k in cell.metadata}
        where = f"{source_path.name}, cell {index}"
        if cell.cell_type == "code":
            text = (
                _strip_solution_markers(cell.source, exercises=exercises, where=where)
                .replace(REPOSITORY_MARKER, url)
                .replace(VERSION_MARKER, tag)
            )
            new = nbformat.v4.new_code_cell(source=text, metadata=metadata)
        elif cell.cell_type == "markdown":
            if BEGIN in cell.source or END in cell.source:
                raise BuildError(f"{where}: solution markers belong in code cells (use <details> in markdown)")
            new = nbformat.v4.new_markdown_cell(source=cell.source.replace(COLAB_MARKER, badge), metadata=metadata)
        else:
            new = nbformat.v4.new_raw_cell(source=cell.source, metadata=metadata)
        new.id = _cell_id(index, cell.cell_type)
        cells.append(new)
    nb = nbformat.v4.new_notebook(
        cells=cells, metadata={"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
    )
    nb.nbformat, nb.nbformat_minor = 4, 5
    nbformat.validate(nb)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """Serialise a notebook deterministically (nbformat's sorted keys, one-space indent, final newline)."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def built_notebooks(source_path: Path = SOURCE) -> dict[Path, str]:
    """The text each target file should hold."""
    if REPOSITORY_MARKER not in source_path.read_text(encoding="utf-8"):
        raise BuildError(f"{source_path.name}: no cell carries {REPOSITORY_MARKER} (the install cell's pip source)")
    return {
        EXERCISES: render(build_notebook(source_path, exercises=True)),
        SOLUTIONS: render(build_notebook(source_path, exercises=False)),
    }


def check(source_path: Path = SOURCE) -> list[Path]:
    """Return the target notebooks that are missing or differ from a fresh build."""
    stale = []
    for path, text in built_notebooks(source_path).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the committed notebooks are up to date")
    args = parser.parse_args(argv)
    try:
        return _run(args.check)
    except BuildError as e:
        print(f"cannot build the notebooks: {e}", file=sys.stderr)
        return 2


def _run(check_only: bool) -> int:
    if check_only:
        stale = check()
        for path in stale:
            print(f"out of date: {_show(path)} (run python scripts/build_notebooks.py)", file=sys.stderr)
        if not stale:
            print("notebooks are in sync with", _show(SOURCE))
        return 1 if stale else 0
    for path, text in built_notebooks().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            print(f"unchanged: {_show(path)}")
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote {_show(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
