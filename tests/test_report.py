"""The offline HTML report: equations pre-rendered to MathML (no MathJax, no script from the network), the
solutions notebook shipped inside the wheel for `report` outside a checkout, and the device option."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch

from part52_grokking_and_modular_arithmetic import report

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "part52_grokking_and_modular_arithmetic"


def prose(html: str) -> str:
    """The page without its scripts and styles: what a reader sees as text."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)


def build_wheel(dest: Path, work: Path) -> Path:
    """A wheel of this checkout (no dependencies), built from a copy of its sources so that the working tree
    gets no build/ folder."""
    src = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / PACKAGE, src / PACKAGE, ignore=ignore)
    shutil.copytree(REPO / "solutions", src / "solutions", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dest.glob(f"{PACKAGE}-*.whl")
    return wheel


# ------------------------------------------------------------------------------------------ maths


def test_equations_become_mathml_and_code_is_left_alone():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                "Inline $\\omega_k = 2\\pi k / p$ and display\n\n$$\\sum_{k} \\cos(\\omega_k (x + y - z))$$\n\n"
                "Code keeps its dollars: `echo $HOME`, and an escaped \\$5 stays a dollar."
            ),
            nbformat.v4.new_code_cell("x = '$not maths$'"),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        html, _ = report.notebook_to_offline_html(nb)
    text = prose(html)
    assert text.count("<math") == 2 and text.count('display="block"') == 1
    assert "<mi>&#x003C9;</mi>" in text or "<mi>ω</mi>" in text  # omega as a MathML identifier
    assert "echo $HOME" in text and "$5" in text
    assert "$not maths$" in re.sub(r"<[^>]+>", "", text)  # code cells are not maths
    assert "\\omega" not in text and "\\sum" not in text  # no raw TeX left
    assert "text/x-mathjax-config" not in html and "Load mathjax" not in html  # nbconvert's MathJax loader is gone


def test_every_equation_of_the_solutions_notebook_converts():
    nb = nbformat.read(str(REPO / report.NOTEBOOK_RELPATH), as_version=4)
    dollars = sum(c.source.count("$") for c in nb.cells if c.cell_type == "markdown")
    assert dollars > 20, "the notebook should have equations to test"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an equation latex2mathml cannot convert warns
        html, _ = report.notebook_to_offline_html(nb)
    text = prose(html)
    assert "$" not in text, "raw TeX delimiters left in the report"
    assert text.count("<math") >= dollars // 4  # ($…$ has two dollars, $$…$$ four)
    report.check_offline_html(html)


def test_an_unconvertible_equation_is_shown_as_tex_with_a_warning(monkeypatch):
    def refuse(tex, *, display=False):
        raise ValueError(f"cannot convert the equation {tex!r}")

    monkeypatch.setattr(report, "latex_to_mathml", refuse)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("see $a < b$")])
    with pytest.warns(UserWarning, match="could not be converted"):
        html, _ = report.notebook_to_offline_html(nb)
    assert '<code class="tex-source">a &lt; b</code>' in html


def test_latex_to_mathml_names_the_equation_it_cannot_convert():
    assert report.latex_to_mathml("x^2").startswith("<math")
    assert 'display="block"' in report.latex_to_mathml("x^2", display=True)
    with pytest.raises(ValueError, match=re.escape("x^") + ".*MissingSuperScript"):
        report.latex_to_mathml("x^")
    with pytest.raises(ValueError, match=re.escape("unsupported command \\notacommand")):
        report.latex_to_mathml("a \\notacommand b")


@pytest.mark.parametrize(
    "script",
    [
        '<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js"></script>',
        '<script type="text/javascript" src="//cdn.example.org/x.js"></script>',
        '<script type="module">const m = await import("https://cdn.jsdelivr.net/npm/mermaid.mjs");</script>',
    ],
)
def test_check_offline_html_rejects_any_script_from_the_network(script):
    html, n = report.notebook_to_offline_html(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("$x$")]))
    report.check_offline_html(html, n)
    with pytest.raises(AssertionError, match="network"):
        report.check_offline_html(html.replace("</head>", script + "</head>", 1), n)


# ------------------------------------------------------------------------------------------ installed package


@pytest.mark.slow
def test_the_wheel_ships_the_solutions_notebook_and_report_finds_it(tmp_path):
    wheel = build_wheel(tmp_path / "dist", tmp_path / "build")
    inside = f"{PACKAGE}/_notebooks/{report.NOTEBOOK_NAME}"
    with zipfile.ZipFile(wheel) as zf:
        assert inside in zf.namelist(), sorted(n for n in zf.namelist() if not n.endswith(".py"))
        assert zf.read(inside) == (REPO / report.NOTEBOOK_RELPATH).read_bytes()
        site = tmp_path / "site"
        zf.extractall(site)

    # outside any checkout: the package imported from the unpacked wheel finds its notebook via importlib.resources
    code = (
        f"import {PACKAGE} as pkg; from {PACKAGE} import report\n"
        "print(pkg.__file__); print(report.default_solutions_notebook())"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    module_file, notebook = proc.stdout.split()
    assert Path(module_file).is_relative_to(site), "imported the checkout instead of the wheel"
    assert Path(notebook) == site / inside
    proc = subprocess.run(
        [sys.executable, "-m", PACKAGE, "report", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and "--device" in proc.stdout, proc.stderr[-2000:]


def test_the_checkout_notebook_comes_first():
    assert report.default_solutions_notebook() == REPO / report.NOTEBOOK_RELPATH
    # a checkout (even an editable install of it) runs solutions/ itself
    assert report.packaged_solutions_notebook() in (None, REPO / report.NOTEBOOK_RELPATH)


# ------------------------------------------------------------------------------------------ device


def test_device_option_reaches_the_kernel_environment(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert report._device_env("cpu") == {report.ENV_DEVICE: "cpu", "CUDA_VISIBLE_DEVICES": ""}
    assert report._device_env("cuda:1")["CUDA_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in report._device_env("cuda")  # the notebook picks the visible GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert report._device_env("cuda:1")["CUDA_VISIBLE_DEVICES"] == "5"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_an_unavailable_device_fails_before_any_work(tmp_path):
    with pytest.raises((RuntimeError, AssertionError)):
        report.run_main_job(tmp_path, notebook=tmp_path / "unused.ipynb", device="cuda", log=lambda s: None)
    assert not any(tmp_path.iterdir())
