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

from part52_grokking_and_modular_arithmetic.app import report

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
        f"import {PACKAGE} as pkg; from {PACKAGE}.app import report\n"
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
    with pytest.raises(ValueError, match="'cuda' is not a device of this machine; valid devices: cpu"):
        report.run_main_job(tmp_path, notebook=tmp_path / "unused.ipynb", device="cuda", log=lambda s: None)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ the main job's failures


@pytest.fixture
def model_calls(monkeypatch):
    """Stands in for provisioning (the stage that may train for minutes); lists its calls."""
    from part52_grokking_and_modular_arithmetic.runs import provision

    calls = []
    run = {"state_dicts": [{}], "epochs": [0], "source": "stub"}
    monkeypatch.setattr(provision, "load_full_run_data", lambda **kw: calls.append(kw) or run)
    return calls


def fake_notebook(path: Path, *code: str) -> Path:
    cells = [nbformat.v4.new_markdown_cell("# A fake notebook\n\n## Setup")]
    cells += [nbformat.v4.new_code_cell(code[0])]
    cells += [nbformat.v4.new_markdown_cell("## Fourier basis\n\nSome text")]
    cells += [nbformat.v4.new_code_cell(source) for source in code[1:]]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    return path


def run_report(capsys, *argv: str) -> tuple[int, str, str]:
    status = report.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--device", "bogus"], "argument --device: 'bogus' is not a device of this machine; valid devices: cpu"),
        (["--cell-timeout", "-1"], "argument --cell-timeout: expected a whole number of seconds > 0, got '-1'"),
        (["--cell-timeout", "0"], "expected a whole number of seconds > 0"),
        (["--cell-timeout", "soon"], "expected a whole number of seconds > 0, got 'soon'"),
    ],
)
def test_bad_options_are_usage_errors_before_any_work(tmp_path, capsys, model_calls, argv, words):
    with pytest.raises(SystemExit) as info:
        report.main(["--out-dir", str(tmp_path / "out"), *argv])
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert model_calls == [] and not (tmp_path / "out").exists()


def test_bad_paths_are_one_line_naming_the_option_before_any_work(tmp_path, capsys, model_calls):
    afile, loop, folder = tmp_path / "afile", tmp_path / "loop", tmp_path / "folder"
    afile.write_text("x")
    loop.symlink_to(loop)
    folder.mkdir()
    nb = fake_notebook(tmp_path / "nb.ipynb", "x = 1")
    cases = [
        (["--out-dir", str(afile)], f"--out-dir {afile}: not a folder (a file is in the way)"),
        (["--out-dir", str(loop)], f"--out-dir {loop}: Too many levels of symbolic links"),
        (["--out-dir", str(afile / "sub")], f"--out-dir {afile / 'sub'}: Not a directory"),
        (["--notebook", str(folder)], f"--notebook {folder}: is a folder, not a file"),
        (["--notebook", str(tmp_path / "no.ipynb")], f"--notebook {tmp_path / 'no.ipynb'}: No such file or directory"),
        (["--notebook", str(loop)], f"--notebook {loop}: Too many levels of symbolic links"),
        (["--run-path", "/dev/null"], "--run-path /dev/null: not a regular file"),
    ]
    for argv, line in cases:
        argv = ["--notebook", str(nb), "--out-dir", str(tmp_path / "out"), *argv]
        assert run_report(capsys, *argv)[::2] == (1, f"error: {line}\n"), argv
    assert model_calls == [] and not (tmp_path / "out").exists()
    assert afile.read_text() == "x"


def test_an_unwritable_out_dir_is_refused_before_any_work(tmp_path):
    """A read-only file system (root ignores permission bits: a read-only tmpfs mount when root can make one)."""
    out = tmp_path / "ro"
    out.mkdir()
    command = f"{sys.executable} -m {PACKAGE} report --out-dir {out}/reports --no-training"
    if os.geteuid() == 0:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("needs `unshare -m` as root, or a non-root user")
        argv = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m,ro tmpfs {out} && {command}"]
    else:
        out.chmod(0o555)
        argv = command.split()
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith(f"error: --out-dir {out}/reports: Read-only file system\n") or result.stderr.endswith(
        f"error: --out-dir {out}/reports: Permission denied\n"
    ), result.stderr
    assert "Training" not in result.stdout and "[report] model" not in result.stdout


def test_a_failing_cell_is_named_and_an_old_report_never_looks_current(tmp_path, capsys, model_calls):
    out = tmp_path / "out"
    out.mkdir()
    (out / report.HTML_NAME).write_text("OLD REPORT")
    (out / report.EXECUTED_NAME).write_text("{}")
    failing = "import numpy as np\nbasis = np.zeros(3)\nbasis[67]"
    nb = fake_notebook(tmp_path / "nb.ipynb", "print('setup ran')", failing, "print('never runs')")
    status, stdout, err = run_report(capsys, "--notebook", str(nb), "--out-dir", str(out))
    failed = out / report.FAILED_NAME
    assert status == 1 and len(model_calls) == 1
    assert err == (
        'error: the notebook failed in cell 4 of 5 (section "Fourier basis"), line 3 `basis[67]`: IndexError: '
        f"index 67 is out of bounds for axis 0 with size 3 (the notebook as run so far: {failed})\n"
    )
    executed = nbformat.read(str(failed), as_version=4)
    assert executed.cells[1].outputs[0].text == "setup ran\n" and executed.cells[4].get("outputs") == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [report.FAILED_NAME, f"{report.REPORT_NAME}.previous.html", f"{report.REPORT_NAME}_executed.previous.ipynb"]
    )
    assert (out / f"{report.REPORT_NAME}.previous.html").read_text() == "OLD REPORT"
    assert "moved aside" in stdout and f"the previous one is {out / report.REPORT_NAME}.previous.html" in stdout

    # fixed: the new report replaces the old one, and the failed notebook goes
    fake_notebook(nb, "print('setup ran')", "print('fixed')")
    status, stdout, err = run_report(capsys, "--notebook", str(nb), "--out-dir", str(out))
    assert (status, err) == (0, "")
    assert sorted(p.name for p in out.iterdir()) == sorted([report.HTML_NAME, report.EXECUTED_NAME])
    assert "fixed" in (out / report.HTML_NAME).read_text()


def test_a_cell_timeout_is_named(tmp_path, capsys, model_calls):
    nb = fake_notebook(tmp_path / "nb.ipynb", "x = 1", "import time\ntime.sleep(60)")
    status, _, err = run_report(capsys, "--notebook", str(nb), "--out-dir", str(tmp_path), "--cell-timeout", "2")
    assert status == 1 and err.startswith('error: the notebook failed in cell 4 of 4 (section "Fourier basis"): ')
    assert "timed out" in err and len(err.splitlines()) == 1 and "\x1b" not in err
