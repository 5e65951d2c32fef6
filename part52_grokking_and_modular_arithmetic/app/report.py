"""The main job: provision the model, run the solutions notebook headless, write a self-contained HTML report.

Arguments are checked first, then each stage is timed: model, execute (a failing cell: one line, the notebook so
far kept), export (plotly.js inlined, MathML equations). A report in place is always complete (atomic rename).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import json
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli import Command, number_arg

__all__ = [
    "PLOTLY_MIME",
    "ReportResult",
    "NotebookError",
    "available_devices",
    "default_solutions_notebook",
    "execute_notebook",
    "summary_text",
    "inline_plotly_outputs",
    "notebook_to_offline_html",
    "latex_to_mathml",
    "check_offline_html",
    "run_main_job",
    "main",
]

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
REPORT_NAME = "grokking_and_modular_arithmetic"
HTML_NAME, EXECUTED_NAME, FAILED_NAME = (f"{REPORT_NAME}{e}" for e in (".html", "_executed.ipynb", ".failed.ipynb"))
SUMMARY_TAG = "summary"
NOTEBOOK_NAME = f"{REPORT_NAME}_solutions.ipynb"
ENV_DEVICE = "PART52_DEVICE"
NOTEBOOK_RELPATH = Path("solutions") / NOTEBOOK_NAME
NOTEBOOK_PACKAGE = "part52_grokking_and_modular_arithmetic._notebooks"
PLOTLYJS_MARKER = "<!-- plotly.js inlined by part52 report -->"
_FIGURE_ID_PREFIX = "plotly-figure-"
_FIGURE_CALL = re.compile(r'Plotly\.newPlot\(\s*"' + _FIGURE_ID_PREFIX + r'\d+"')
_REQUIREJS_TAG = re.compile(r"<script[^>]*src=\"[^\"]*require(?:\.min)?\.js\"[^>]*>\s*</script>\s*")
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"(?:https?:)?//[^\"]*\"|\bimport\(\s*\"https?://", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
#: a TeX command latex2mathml did not know, copied into MathML text
_LEAKED_COMMAND = re.compile(r">[^<]*?(\\[A-Za-z]+)")
#: nbconvert's lab template without its MathJax and mermaid loaders (CDN scripts): maths is MathML already.
_OFFLINE_TEMPLATE = (
    "{%- extends 'lab/index.html.j2' -%}\n"
    "{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}\n"
    "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}\n"
)


@dataclass
class ReportResult:
    """Where the report went and how long each stage took (seconds)."""

    html_path: Path
    notebook_path: Path
    timings: dict[str, float] = field(default_factory=dict)
    n_figures: int = 0
    model_source: str = ""
    summary: str = ""  #: printed output of the notebook's ``summary`` cell


def repo_root() -> Path:
    """The checkout this package lives in (the folder holding the package folder)."""
    return Path(__file__).resolve().parents[2]  # app/ -> the package -> the checkout


def default_solutions_notebook() -> Path:
    """The checkout's ``solutions/`` notebook, else the installed package's; else ``FileNotFoundError``."""
    path = repo_root() / NOTEBOOK_RELPATH
    if path.is_file():
        return path
    shipped = packaged_solutions_notebook()
    if shipped is not None:
        return shipped
    raise FileNotFoundError(
        f"no solutions notebook at {path} nor in the installed package ({NOTEBOOK_PACKAGE}). Reinstall the package "
        f"(`pip install part52_grokking_and_modular_arithmetic[notebooks]`), run from a checkout (after "
        f"`python scripts/build_notebooks.py`), or pass notebook=PATH / --notebook PATH."
    )


def packaged_solutions_notebook() -> Path | None:
    """The solutions notebook shipped as package data in an installed wheel, or ``None`` (e.g. in a checkout)."""
    from importlib import resources

    try:
        entry = resources.files(NOTEBOOK_PACKAGE) / NOTEBOOK_NAME
    except (ModuleNotFoundError, TypeError):
        return None
    return Path(str(entry)) if entry.is_file() else None  # installed wheels are unpacked: the entry is a real file


def available_devices() -> list[str]:
    """The torch devices this machine can compute on: ``cpu``; ``cuda`` and ``cuda:N`` per visible GPU; ``mps``."""
    import torch

    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu"] + (["cuda", *gpus] if gpus else []) + (["mps"] if torch.backends.mps.is_available() else [])


def _check_device(device: str | None) -> None:
    if device is not None and device != "cpu" and device not in (valid := available_devices()):
        raise ValueError(f"{device!r} is not a device of this machine; valid devices: {', '.join(valid)}")


def _device_env(device: str) -> dict[str, str]:
    """Kernel environment for ``device``: ``$PART52_DEVICE`` and a ``CUDA_VISIBLE_DEVICES`` showing only it."""
    env = {ENV_DEVICE: device}
    kind, _, index = device.partition(":")
    if kind == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif kind == "cuda" and index:
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[int(index)] if int(index) < len(visible) else index
    return env


class NotebookError(RuntimeError):
    """The notebook stopped (the message names cell, section and error); ``notebook``: as run so far."""

    def __init__(self, message: str, notebook):
        super().__init__(message)
        self.notebook = notebook


def _failure(nb, index: int | None, e: BaseException) -> str:
    """Where and why the notebook stopped, in one plain line: cell, section, failing line, error."""
    # nbclient's CellExecutionError names the exception in the cell; else (a timeout, a dead kernel) the first line
    error = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else (str(e).strip() or type(e).__name__).splitlines()[0]
    error = " ".join(_ANSI.sub("", error).split())[:400]
    if index is None:
        return f"the notebook kernel failed before any cell ran: {error}"
    where = f"cell {index + 1} of {len(nb.cells)}"
    headings = [h for cell in nb.cells[:index] if cell.cell_type == "markdown" for h in _HEADING.findall(cell.source)]
    if headings:
        where += f' (section "{headings[-1]}")'
    line = re.search(r"^-+>\s*(\d+)\s(.*)$", _ANSI.sub("", getattr(e, "traceback", "") or ""), re.M)
    if line:  # IPython marks the failing line of the cell: "----> 3 x = basis[67]"
        where += f", line {line[1]} `{line[2].strip()}`"
    return f"the notebook failed in {where}: {error}"


def execute_notebook(
    notebook_path: str | os.PathLike,
    *,
    cwd: str | os.PathLike | None = None,
    timeout: int = 1800,
    kernel_name: str = "python3",
    allow_errors: bool = False,
    env: dict[str, str] | None = None,
):
    """Execute a notebook in a fresh kernel (in ``cwd``, default the checkout; ``env`` added to ``os.environ``;
    ``timeout`` s per cell) and return it; :class:`NotebookError` when a cell fails or the kernel dies."""
    # debugpy (imported with ipykernel, here and in the kernel) may print a "frozen modules" warning into the
    # command's output: a headless run needs no debugger check
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook_path), as_version=4)
    started: list[int] = []  # the index of each cell as it starts
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(Path(cwd) if cwd is not None else repo_root())}},
        store_widget_state=False,
        on_cell_execute=lambda cell, cell_index: started.append(cell_index),
    )
    try:
        client.execute(env={**os.environ, **(env or {})})  # nbclient hands env on to the kernel's process
    except Exception as e:
        raise NotebookError(_failure(nb, started[-1] if started else None, e), nb) from e
    return nb


def summary_text(nb, tag: str = SUMMARY_TAG) -> str:
    """The printed output of the executed notebook's cells tagged ``summary`` (the run's key numbers)."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "code" and tag in cell.get("metadata", {}).get("tags", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    parts.append(output.get("text", ""))
                elif output.get("output_type") == "error":
                    parts.append(f"{output.get('ename')}: {output.get('evalue')}\n")
    return "".join(parts)


def inline_plotly_outputs(nb) -> tuple[Any, int]:
    """A copy of ``nb`` whose plotly outputs are HTML (div + ``Plotly.newPlot``, needing a global ``Plotly``)
    instead of JSON, and the figure count. Widget views (no stored state) fall back to their text."""
    import plotly.io as pio

    nb = copy.deepcopy(nb)
    n = 0
    for output in (out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])):
        data = output.get("data") or {}
        data.pop(WIDGET_MIME, None)
        if PLOTLY_MIME in data:
            fig = data.pop(PLOTLY_MIME)
            fig = json.loads(fig) if isinstance(fig, str) else fig
            n += 1
            data["text/html"] = pio.to_html(
                fig,
                include_plotlyjs=False,
                full_html=False,
                auto_play=False,  # animations start at their first frame, as in Jupyter
                validate=False,
                default_height="100%" if fig.get("layout", {}).get("height") else "520px",
                default_width="100%",
                div_id=f"{_FIGURE_ID_PREFIX}{n}",
            )
    return nb, n


def latex_to_mathml(tex: str, *, display: bool = False) -> str:
    """One equation (TeX; ``display``: a ``$$…$$`` block) as MathML; ``ValueError`` naming it if unsupported."""
    try:
        from latex2mathml.converter import convert
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the offline report needs latex2mathml: `pip install part52_grokking_and_modular_arithmetic[notebooks]`"
        ) from e
    try:
        mathml = convert(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises assorted exception types on unsupported TeX
        raise ValueError(f"cannot convert the equation {tex!r} to MathML ({type(e).__name__}: {e})") from e
    leaked = _LEAKED_COMMAND.search(mathml)
    if leaked:  # latex2mathml copies commands it does not know into the output as text
        raise ValueError(f"cannot convert the equation {tex!r} to MathML (unsupported command {leaked.group(1)})")
    return mathml


def _offline_exporter(failed: list[str]):
    """nbconvert's lab exporter with MathML maths (TeX it cannot convert: shown as code, added to ``failed``)."""
    from html import escape

    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    def mathml(tex: str, display: bool) -> str:
        try:
            return latex_to_mathml(tex, display=display)
        except ValueError:
            failed.append(tex)
            return f'<code class="tex-source">{escape(tex)}</code>'

    class MathMLRenderer(IPythonRenderer):
        def inline_math(self, body: str) -> str:
            return mathml(body, display=False)

        def block_math(self, body: str) -> str:
            return mathml(body, display=True)

        def latex_environment(self, name: str, body: str) -> str:
            return mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    class OfflineHTMLExporter(HTMLExporter):
        @pass_context  # a jinja filter that reads the cell (attachments) from the template context, as nbconvert's
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            renderer = MathMLRenderer(
                escape=False,
                attachments=cell.get("attachments", {}),
                embed_images=self.embed_images,
                path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                anchor_link_text=self.anchor_link_text,
                exclude_anchor_links=self.exclude_anchor_links,
                **self.lexer_options,
            )
            return MarkdownWithMath(renderer=renderer).render(source)

    return OfflineHTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"part52_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="part52_offline.html.j2",
    )


def notebook_to_offline_html(nb, *, title: str | None = None) -> tuple[str, int]:
    """An executed notebook as one self-contained HTML page; ``(html, n_figures)``. plotly.js is inlined first in
    ``<head>`` (so no AMD loader captures it) and require.js (a CDN download) dropped; TeX left over warns."""
    from plotly.offline import get_plotlyjs

    nb_html, n_figures = inline_plotly_outputs(nb)
    failed: list[str] = []
    body, _ = _offline_exporter(failed).from_notebook_node(
        nb_html, resources={"metadata": {"name": title or REPORT_NAME}}
    )
    if failed:
        warnings.warn(
            f"{len(failed)} equation(s) could not be converted to MathML and are shown as TeX: {failed[:5]}",
            stacklevel=2,
        )
    body = _REQUIREJS_TAG.sub("", body, count=1)
    head = re.search(r"<head[^>]*>", body)
    if head is None:
        raise RuntimeError("nbconvert produced HTML without a <head>; cannot inline plotly.js")
    plotlyjs = (
        f"{PLOTLYJS_MARKER}\n"
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
    )
    return body[: head.end()] + "\n" + plotlyjs + body[head.end() :], n_figures


def check_offline_html(html: str, n_figures: int | None = None) -> None:
    """``AssertionError`` unless the page inlines plotly.js once, loads no remote script and draws ``n_figures``."""
    if html.count(PLOTLYJS_MARKER) != 1 or "plotly.js v" not in html:
        raise AssertionError("plotly.js is not inlined exactly once in the report")
    if remote := _REMOTE_SCRIPT.search(html):  # a CDN plotly.js, MathJax, mermaid...
        raise AssertionError(f"the report loads a script from the network: {remote.group(0)[:120]!r}")
    if n_figures is not None:
        drawn = len(_FIGURE_CALL.findall(html))  # (not every "Plotly.newPlot(": plotly.js itself may contain it)
        if drawn < n_figures:
            raise AssertionError(f"the report draws {drawn} plotly figures, expected {n_figures}")


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float], log: Callable[[str], None]):
    log(f"[report] {name} ...")
    t0 = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t0  # (not reached when the stage fails)
    log(f"[report] {name}: done in {timings[name]:.1f} s")


def _regular_file(path: Path, *, must_exist: bool = True) -> None:
    """``OSError`` naming ``path`` unless it is a regular file (or, unless ``must_exist``, missing)."""
    try:
        mode = os.stat(path).st_mode  # follows links: a symlink loop raises ELOOP here
    except FileNotFoundError:
        if must_exist:
            raise
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))


def _writable_folder(path: Path) -> None:
    """Make ``path`` a folder this process can write in, else ``OSError`` naming it. Tried by writing:
    ``os.access`` misses read-only mounts for root."""
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder (a file is in the way)", str(path))
    except FileNotFoundError:
        path.mkdir(parents=True)
    probe = path / f".{REPORT_NAME}.probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, f"cannot write in it: {e.strerror}", str(path)) from None


def _write_then_rename(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it to ``path``: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _replacing_report(out_dir: Path, log: Callable[[str], None]):
    """Move the report in ``out_dir`` aside (``*.previous.*``) while the job runs: kept if it fails, else deleted."""
    (out_dir / FAILED_NAME).unlink(missing_ok=True)
    current = [out_dir / HTML_NAME, out_dir / EXECUTED_NAME]
    previous = [path.with_name(f"{path.stem}.previous{path.suffix}") for path in current]
    moved = [(path, old) for path, old in zip(current, previous, strict=True) if path.exists() or path.is_symlink()]
    for path, old in moved:
        os.replace(path, old)
    if moved:
        log(f"[report] the report already in {out_dir} is moved aside until this one is written: {previous[0].name}")
    try:
        yield
    except BaseException:
        kept = f"; the previous one is {previous[0]} (not of this run)" if previous[0].exists() else ""
        log(f"[report] no report written{kept}")
        raise
    for path in previous:
        path.unlink(missing_ok=True)


def _check_arguments(out_dir, notebook, run_path, cell_timeout, device) -> tuple[Path, Path]:
    """``(out_dir, notebook)`` once :func:`run_main_job`'s arguments are valid; else ``ValueError``/``OSError``."""
    notebook_path = Path(notebook) if notebook is not None else default_solutions_notebook()
    if not cell_timeout > 0:
        raise ValueError(f"cell_timeout (--cell-timeout) must be a number of seconds > 0, got {cell_timeout!r}")
    _check_device(device)
    _regular_file(notebook_path)
    if run_path is not None:
        _regular_file(Path(run_path), must_exist=False)  # a missing run file is provisioned
    _writable_folder(Path(out_dir))
    return Path(out_dir), notebook_path


def run_main_job(
    out_dir: str | os.PathLike = "reports",
    *,
    notebook: str | os.PathLike | None = None,
    run_path: str | os.PathLike | None = None,
    allow_training: bool = True,
    cell_timeout: int = 1800,
    progress: bool = True,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> ReportResult:
    """Check the arguments, provision the model (``run_path``: also the kernel's ``PART52_RUN_PATH``), execute
    ``notebook`` (on ``device``, one of :func:`available_devices`; ``None``: the notebook's choice) and write an
    offline HTML report in ``out_dir``. Bad arguments raise ``ValueError``/``OSError`` before any work."""
    import nbformat

    from ..runs.provision import checkout_root, load_full_run_data

    out_dir, notebook_path = _check_arguments(out_dir, notebook, run_path, cell_timeout, device)
    env = {"PART52_RUN_PATH": str(Path(run_path).resolve())} if run_path is not None else {}
    if not progress:
        env["TQDM_DISABLE"] = "1"
    if device is not None:
        env.update(_device_env(device))
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    with _replacing_report(out_dir, log):
        with _stage("model (load_full_run_data)", timings, log):
            where = {"path": run_path} if run_path is not None else {}  # (else provisioning's default)
            data = load_full_run_data(**where, allow_training=allow_training)
            source = str(getattr(data, "source", "") or "")  # the run object's RunSource
            n, last = len(data["state_dicts"]), data["epochs"][-1]
            log(f"[report] checkpoint history: {n} checkpoints up to epoch {last} ({source or 'source unknown'})")
            del data
        with _stage(f"execute {notebook_path.name}", timings, log):
            try:  # the kernel runs in the checkout (relative cache paths resolve), else in out_dir
                nb = execute_notebook(notebook_path, cwd=checkout_root() or out_dir, timeout=cell_timeout, env=env)
            except NotebookError as e:
                failed = out_dir / FAILED_NAME
                _write_then_rename(failed, lambda tmp: nbformat.write(e.notebook, str(tmp)))
                raise NotebookError(f"{e} (the notebook as run so far: {failed})", e.notebook) from e.__cause__
        with _stage("export HTML", timings, log):
            html, n_figures = notebook_to_offline_html(nb)
            check_offline_html(html, n_figures)
            nb_path, html_path = out_dir / EXECUTED_NAME, out_dir / HTML_NAME
            _write_then_rename(nb_path, lambda tmp: nbformat.write(nb, str(tmp)))
            _write_then_rename(html_path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    timings["total"] = time.perf_counter() - t_start
    if summary := summary_text(nb):
        log("[report] summary of the run (from the notebook):\n" + summary.rstrip())
    size = html_path.stat().st_size / 1e6
    log(f"[report] wrote {html_path.resolve()} ({size:.1f} MB, {n_figures} figures, plotly.js inlined)")
    log(f"[report] executed notebook: {nb_path.resolve()}")
    log("[report] timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return ReportResult(html_path, nb_path, timings, n_figures, model_source=source, summary=summary)


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    def device_arg(text: str) -> str:
        try:
            _check_device(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    parser.description = (
        "Provision the model, execute the solutions notebook and write an offline HTML report. The options and the "
        "output folder are checked before anything else."
    )
    parser.add_argument("--out-dir", type=Path, default=Path("reports"), help="output folder (default: reports)")
    parser.add_argument("--notebook", type=Path, help="notebook to execute (default: the solutions notebook)")
    parser.add_argument("--run-path", type=Path, help="checkpoint-history file (default: the package default)")
    parser.add_argument("--no-training", action="store_true", help="fail, not train, when no model is available")
    parser.add_argument(
        "--cell-timeout",
        type=number_arg(int, "a whole number of seconds", 0),
        default=1800,
        help="per-cell timeout in seconds (default 1800)",
    )
    parser.add_argument("--device", type=device_arg, help="torch device, e.g. cuda (default: the notebook's choice)")


def _cmd_report(args: argparse.Namespace) -> int:
    _check_arguments(args.out_dir, args.notebook, args.run_path, args.cell_timeout, args.device)
    from ..training.train import command_process  # (a slow import: after the checks)

    command_process(args.owns_process)  # it may train the model
    run_main_job(
        args.out_dir,
        notebook=args.notebook,
        run_path=args.run_path,
        allow_training=not args.no_training,
        cell_timeout=args.cell_timeout,
        device=args.device,
    )
    return 0


COMMANDS = {
    "report": Command(
        "the main job: the solutions notebook as an offline HTML report", _add_report_options, _cmd_report
    )
}


def main(argv: list[str] | None = None) -> int:
    """``report`` command line (``python -m part52_grokking_and_modular_arithmetic report ...``): 0 on success, 1
    with one line ``error: ...``, 2 for a bad option."""
    from .cli import main as cli_main

    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
