"""The notebooks' first cell (install the course package when it is missing, e.g. on Colab) and how the build
writes the repository URL into it from ``pyproject.toml``. Installing for real is tests/test_colab.py (slow)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_notebooks import build  # scripts/build_notebooks.py, loaded as a module

REPO = Path(__file__).resolve().parents[1]


def install_cell(path: Path) -> str:
    nb = nbformat.read(str(path), as_version=4)
    return next(c for c in nb.cells if c.cell_type == "code").source


def repository_url() -> str:
    """``[project.urls] Repository`` of pyproject.toml, read with a plain pattern (independent of the build)."""
    found = re.search(
        r'^\[project\.urls\][^\[]*?^Repository\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M | re.S
    )
    assert found, "pyproject.toml has no [project.urls] Repository"
    return found.group(1)


def package_version() -> str:
    """``[project] version`` of pyproject.toml, read with a plain pattern (independent of the build)."""
    found = re.search(
        r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M | re.S
    )
    assert found, "pyproject.toml has no [project] version"
    return found.group(1)


@pytest.mark.parametrize("notebook", [build.EXERCISES, build.SOLUTIONS], ids=["exercises", "solutions"])
def test_both_notebooks_install_the_version_they_were_built_with(notebook):
    source = install_cell(notebook)
    assert f'"git+{repository_url()}@v{package_version()}"' in source
    assert build.REPOSITORY_MARKER not in source and build.VERSION_MARKER not in source and "YOUR-ORG" not in source
    assert "GROKKING_COURSE_PIP_SPEC" in source  # still overridable


@pytest.mark.parametrize("notebook", [build.EXERCISES, build.SOLUTIONS], ids=["exercises", "solutions"])
def test_both_notebooks_open_in_colab_at_their_own_path_on_the_default_branch(notebook):
    first = nbformat.read(str(notebook), as_version=4).cells[0]
    assert first.cell_type == "markdown" and build.COLAB_MARKER not in first.source
    owner_repo = repository_url().removeprefix("https://github.com/").rstrip("/")
    link = (
        f"https://colab.research.google.com/github/{owner_repo}/blob/{build.DEFAULT_BRANCH}/"
        f"{notebook.relative_to(REPO).as_posix()}"
    )
    assert f"[![Open In Colab]({build.COLAB_BADGE})]({link})" in first.source


def test_the_readme_badge_is_built_from_the_same_url():
    """The README's "Open in Colab" badge opens the exercises notebook of the repository in pyproject.toml."""
    badge = build.colab_badge(repository_url(), build.DEFAULT_BRANCH, build.EXERCISES)
    assert badge.startswith("[![Open In Colab]") and badge in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_badge_needs_a_github_repository():
    assert "colab.research.google.com/github/org/repo/blob/v1.2/" in build.colab_badge(
        "https://github.com/org/repo.git", "v1.2", build.EXERCISES
    )
    assert "colab.research" not in build.colab_badge("https://gitlab.com/org/repo", "v1.2", build.EXERCISES)


def test_a_missing_version_stops_the_build(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n')
    with pytest.raises(build.BuildError, match="version"):
        build.version_tag(pyproject)


def test_the_url_is_written_once_in_the_sources():
    url = repository_url()
    assert url.startswith("https://") and not build.PLACEHOLDER_PATTERN.search(url)
    assert url not in build.SOURCE.read_text(encoding="utf-8"), (
        "the notebook source should carry the marker, not the URL"
    )
    assert build.REPOSITORY_MARKER in build.SOURCE.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "url", ["https://github.com/YOUR-ORG/repo", "", "git@github.com:org/repo", "https://<org>/repo"]
)
def test_a_missing_or_placeholder_url_stops_the_build(tmp_path, url):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[project]\nname = "x"\n[project.urls]\nRepository = "{url}"\n')
    with pytest.raises(build.BuildError, match="Repository"):
        build.repository_url(pyproject)


def test_a_source_without_the_marker_is_not_built(tmp_path):
    src = tmp_path / "nb.py"
    src.write_text("# %%\nprint('no install cell')\n")
    with pytest.raises(build.BuildError, match=build.REPOSITORY_MARKER):
        build.built_notebooks(src)


def test_the_cell_does_nothing_when_the_package_is_importable(monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("the install cell ran pip although the package is installed")

    monkeypatch.setattr(subprocess, "run", no_pip)
    exec(compile(install_cell(build.SOLUTIONS), "install-cell", "exec"), {})


def test_a_failed_install_says_why_and_what_to_do(tmp_path):
    """Run the cell in the base interpreter (no course package) with a pip source that does not exist."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    probe = subprocess.run(
        [base, "-c", "import part52_grokking_and_modular_arithmetic"], capture_output=True, cwd=tmp_path
    )
    has_pip = subprocess.run([base, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if probe.returncode == 0 or not has_pip:
        pytest.skip("needs a Python without the course package and with pip")
    script = tmp_path / "cell.py"
    script.write_text(install_cell(build.SOLUTIONS))
    missing = tmp_path / "no_such_checkout"
    proc = subprocess.run(
        [base, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GROKKING_COURSE_PIP_SPEC": str(missing)},
    )
    assert proc.returncode != 0
    assert f"pip install {missing}" in proc.stdout  # says what it is doing first
    err = proc.stderr
    assert "RuntimeError: Could not install the course package" in err
    assert "The end of pip's message:" in err and str(missing) in err.split("The end of pip's message:")[1]
    assert "What to do" in err and "GROKKING_COURSE_PIP_SPEC" in err


def test_check_flags_the_notebooks_when_the_url_changes(tmp_path, monkeypatch, capsys):
    assert build.main(["--check"]) == 0
    moved = tmp_path / "pyproject.toml"
    moved.write_text(
        (REPO / "pyproject.toml").read_text().replace(repository_url(), "https://github.com/another-org/fork")
    )
    monkeypatch.setattr(build, "PYPROJECT", moved)
    assert build.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    moved.write_text(
        (REPO / "pyproject.toml").read_text().replace(f'version = "{package_version()}"', 'version = "9.9.9"')
    )
    assert build.main(["--check"]) == 1  # a new version: the notebooks must install (and link) the new tag
    moved.write_text('[project]\nname = "x"\n')
    assert build.main(["--check"]) == 2
    assert "Repository" in capsys.readouterr().err
