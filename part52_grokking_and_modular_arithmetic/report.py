"""The main job: provision the model, run the solutions notebook headless, write a self-contained HTML report.

Stages (each timed and printed):

1. **model** — :func:`provision.load_full_run_data` (the cached file, the hub file, or a local training run);
2. **execute** — run the solutions notebook in a fresh ``python3`` kernel (nbclient), cwd = the repo root
   (the output folder when the package is pip-installed, not run from a checkout);
3. **export** — write ``<out_dir>/grokking_and_modular_arithmetic.html`` (nbconvert) that needs no network:
   plotly.js is inlined **once** in the page head and each figure becomes a ``<div>`` + ``Plotly.newPlot``
   script (no CDN); every equation of the markdown (``$…$``, ``$$…$$``, ``\begin{…}``) is converted to MathML
   with ``latex2mathml``, which browsers draw natively, so no MathJax is loaded (nbconvert's MathJax and
   mermaid ``<script>`` blocks are left out). The executed notebook is saved beside it.

The notebook comes from the checkout (``solutions/``) or, for a pip-installed package, from the copy shipped
inside the package (``part52_grokking_and_modular_arithmetic/_notebooks/``, see ``pyproject.toml``).

Command line: ``python -m part52_grokking_and_modular_arithmetic report [--out-dir reports]`` or
``python -m part52_grokking_and_modular_arithmetic.report``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PLOTLY_MIME",
    "ReportResult",
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
#: cell tag of the notebook's summary cell, whose printed output the main job repeats in the terminal
SUMMARY_TAG = "summary"
NOTEBOOK_NAME = f"{REPORT_NAME}_solutions.ipynb"
#: environment variable telling the notebook kernel which torch device to compute on ("cpu", "cuda", ...)
ENV_DEVICE = "PART52_DEVICE"
NOTEBOOK_RELPATH = Path("solutions") / NOTEBOOK_NAME
#: the package that carries the solutions notebook in a built wheel (``solutions/`` mapped in pyproject.toml)
NOTEBOOK_PACKAGE = "part52_grokking_and_modular_arithmetic._notebooks"
#: marker put in front of the inlined plotly.js so checks can find it (and find it only once)
PLOTLYJS_MARKER = "<!-- plotly.js inlined by part52 report -->"
#: the ``<div>`` ids of the inlined figures (``plotly-figure-1``, ...) and the call that draws one
_FIGURE_ID_PREFIX = "plotly-figure-"
_FIGURE_CALL = re.compile(r'Plotly\.newPlot\(\s*"' + _FIGURE_ID_PREFIX + r'\d+"')
_REQUIREJS_TAG = re.compile(r"<script[^>]*src=\"[^\"]*require(?:\.min)?\.js\"[^>]*>\s*</script>\s*")
_CDN_PLOTLY = re.compile(r"<script[^>]*src=\"https?://[^\"]*plotly[^\"]*\"", re.IGNORECASE)
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"(?:https?:)?//[^\"]*\"|\bimport\(\s*\"https?://", re.IGNORECASE)
#: a TeX command copied verbatim into MathML text (latex2mathml's way of passing over one it does not know)
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
    """The checkout this package lives in (the parent of the package folder)."""
    return Path(__file__).resolve().parents[1]


def default_solutions_notebook() -> Path:
    """The solutions notebook: the checkout's ``solutions/`` copy, else the one shipped in the installed package
    (:data:`NOTEBOOK_PACKAGE`). Raises ``FileNotFoundError`` saying where it looked when neither exists."""
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
    if not entry.is_file():
        return None
    return Path(str(entry))  # installed wheels are unpacked folders: the entry is a real file


def _device_env(device: str) -> dict[str, str]:
    """Environment for a notebook kernel that should compute on ``device``: ``$PART52_DEVICE``, and
    ``CUDA_VISIBLE_DEVICES`` so that a notebook choosing "cuda when available" lands on it (empty for the CPU,
    the one GPU for ``cuda:N``)."""
    import torch

    dev = torch.device(device)
    env = {ENV_DEVICE: str(dev)}
    if dev.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif dev.type == "cuda" and dev.index is not None:
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[dev.index] if dev.index < len(visible) else str(dev.index)
    return env


def _kernel_cwd(out_dir: Path) -> Path:
    """The notebook kernel's working directory: the checkout root when run from one, else ``out_dir``."""
    from .provision import checkout_root

    return checkout_root() or out_dir


# ---------------------------------------------------------------------------------------------- execution


def execute_notebook(
    notebook_path: str | os.PathLike,
    *,
    cwd: str | os.PathLike | None = None,
    timeout: int = 1800,
    kernel_name: str = "python3",
    allow_errors: bool = False,
    env: dict[str, str] | None = None,
):
    """Execute a notebook headless in a fresh kernel and return the executed ``NotebookNode``.

    Args:
        cwd: working directory of the kernel (default: the repo root, so relative cache paths resolve).
        timeout: per-cell timeout in seconds.
        allow_errors: keep going after a failing cell (errors stay in the outputs) instead of raising.
        env: extra environment variables for the kernel (merged into ``os.environ``).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook_path), as_version=4)
    cwd = Path(cwd) if cwd is not None else repo_root()
    kernel_env = {**os.environ, **(env or {})}
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(cwd)}},
        store_widget_state=False,
    )
    # nbclient passes extra kwargs of async_start_new_kernel on to the kernel manager (env of the process).
    client.execute(env=kernel_env)
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


# ---------------------------------------------------------------------------------------------- HTML export


def _figure_html(fig_json: dict, div_id: str) -> str:
    import plotly.io as pio

    height = "520px" if not fig_json.get("layout", {}).get("height") else "100%"
    return pio.to_html(
        fig_json,
        include_plotlyjs=False,
        full_html=False,
        auto_play=False,  # animations start at their first frame, as in Jupyter
        validate=False,
        default_height=height,
        default_width="100%",
        div_id=div_id,
    )


def inline_plotly_outputs(nb) -> tuple[Any, int]:
    """Return a copy of ``nb`` whose plotly outputs are HTML (div + ``Plotly.newPlot``), and the figure count.

    Every output carrying ``application/vnd.plotly.v1+json`` gets a ``text/html`` rendering that needs only a
    global ``Plotly`` object (the page provides it once); the JSON itself is dropped from the copy. Widget
    views (progress bars), whose state is not stored, fall back to their text.
    """
    nb = copy.deepcopy(nb)
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data:
                continue
            data.pop(WIDGET_MIME, None)
            if PLOTLY_MIME in data:
                fig_json = data.pop(PLOTLY_MIME)
                if isinstance(fig_json, str):
                    fig_json = json.loads(fig_json)
                n += 1
                data["text/html"] = _figure_html(fig_json, div_id=f"{_FIGURE_ID_PREFIX}{n}")
    return nb, n


def _plotlyjs_head() -> str:
    from plotly.offline import get_plotlyjs

    return (
        f"{PLOTLYJS_MARKER}\n"
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
    )


def latex_to_mathml(tex: str, *, display: bool = False) -> str:
    """One equation (the TeX between ``$…$``, or ``$$…$$`` with ``display=True``) as a MathML ``<math>`` element.

    Raises ``ValueError`` naming the equation when ``latex2mathml`` cannot convert it.
    """
    try:
        from latex2mathml.converter import convert
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the offline report converts equations with latex2mathml: "
            "`pip install part52_grokking_and_modular_arithmetic[notebooks]` (or `pip install latex2mathml`)"
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
    """nbconvert's lab ``HTMLExporter`` with MathML maths and no MathJax/mermaid loaders.

    Equations that cannot be converted are shown as their TeX source in ``<code>`` and appended to ``failed``.
    """
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
    """Render an executed notebook to one self-contained HTML page; return ``(html, n_figures)``.

    plotly.js is inlined once at the top of ``<head>`` (before any other script, so no AMD loader can capture
    it), require.js (unused here, and a CDN download) is dropped, each plotly output is a static div, and every
    markdown equation is MathML (no MathJax). An equation ``latex2mathml`` cannot convert is shown as TeX source
    with a warning.
    """
    nb_html, n_figures = inline_plotly_outputs(nb)
    failed: list[str] = []
    exporter = _offline_exporter(failed)
    resources = {"metadata": {"name": title or REPORT_NAME}}
    body, _ = exporter.from_notebook_node(nb_html, resources=resources)
    if failed:
        warnings.warn(
            f"{len(failed)} equation(s) could not be converted to MathML and are shown as TeX: {failed[:5]}",
            stacklevel=2,
        )
    body = _REQUIREJS_TAG.sub("", body, count=1)
    head = re.search(r"<head[^>]*>", body)
    if head is None:
        raise RuntimeError("nbconvert produced HTML without a <head>; cannot inline plotly.js")
    body = body[: head.end()] + "\n" + _plotlyjs_head() + body[head.end() :]
    return body, n_figures


def check_offline_html(html: str, n_figures: int | None = None) -> None:
    """Raise ``AssertionError`` unless the page inlines plotly.js exactly once, loads no script from the network
    (no CDN plotly, MathJax or mermaid) and (when given) draws ``n_figures`` figures."""
    if html.count(PLOTLYJS_MARKER) != 1 or "plotly.js v" not in html:
        raise AssertionError("plotly.js is not inlined exactly once in the report")
    if _CDN_PLOTLY.search(html):
        raise AssertionError("the report loads plotly.js from the network (a CDN <script src=...>)")
    remote = _REMOTE_SCRIPT.search(html)
    if remote:
        raise AssertionError(f"the report loads a script from the network: {remote.group(0)[:120]!r}")
    if n_figures is not None:
        drawn = len(_FIGURE_CALL.findall(html))  # (not every "Plotly.newPlot(": plotly.js itself may contain it)
        if drawn < n_figures:
            raise AssertionError(f"the report draws {drawn} plotly figures, expected {n_figures}")


# ---------------------------------------------------------------------------------------------- main job


def _stage(name: str, timings: dict[str, float], log: Callable[[str], None]):
    class _Timer:
        def __enter__(self):
            log(f"[report] {name} ...")
            self.t0 = time.perf_counter()
            return self

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.t0
            if exc[0] is None:
                log(f"[report] {name}: done in {timings[name]:.1f} s")
            return False

    return _Timer()


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
    """Provision the model, execute the solutions notebook and write an offline HTML report.

    Args:
        out_dir: folder for ``grokking_and_modular_arithmetic.html`` and the executed ``.ipynb``.
        notebook: notebook to run (default: the checkout's solutions notebook).
        run_path: checkpoint-history file for :func:`provision.load_full_run_data` (default: its default path).
            When given, the notebook kernel reads it too (``PART52_RUN_PATH``).
        allow_training: let provisioning train the model when neither a cached file nor the hub is available.
        cell_timeout: per-cell timeout (seconds) of the notebook run.
        device: torch device for the notebook's computations (``"cpu"``, ``"cuda"``, ``"cuda:1"``): the kernel
            gets ``$PART52_DEVICE`` and a ``CUDA_VISIBLE_DEVICES`` showing only that device (none for the CPU).
            ``None``: the notebook's own choice (a GPU when there is one).
    Returns:
        :class:`ReportResult` (paths, per-stage timings, number of figures).
    """
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    notebook_path = Path(notebook) if notebook is not None else default_solutions_notebook()
    if device is not None:
        import torch

        torch.empty(0, device=device)  # fail now, with torch's message, on a device this machine lacks
    t_start = time.perf_counter()

    with _stage("model (load_full_run_data)", timings, log):
        from .provision import load_full_run_data

        kwargs: dict[str, Any] = {"allow_training": allow_training}
        if run_path is not None:
            kwargs["path"] = run_path
        data = load_full_run_data(**kwargs)
        n_ckpt = len(data["state_dicts"])
        last_epoch = data["epochs"][-1]
        source = str(getattr(data, "source", "") or "")  # the run object's RunSource
        del data
        log(
            f"[report] checkpoint history: {n_ckpt} checkpoints up to epoch {last_epoch} ({source or 'source unknown'})"
        )

    env = {"PART52_RUN_PATH": str(Path(run_path).resolve())} if run_path is not None else {}
    if not progress:
        env["TQDM_DISABLE"] = "1"
    if device is not None:
        env.update(_device_env(device))
    out_dir.mkdir(parents=True, exist_ok=True)
    with _stage(f"execute {notebook_path.name}", timings, log):
        executed = execute_notebook(notebook_path, cwd=_kernel_cwd(out_dir), timeout=cell_timeout, env=env)

    with _stage("export HTML", timings, log):
        import nbformat

        html, n_figures = notebook_to_offline_html(executed)
        check_offline_html(html, n_figures)
        html_path = out_dir / f"{REPORT_NAME}.html"
        html_path.write_text(html, encoding="utf-8")
        nb_path = out_dir / f"{REPORT_NAME}_executed.ipynb"
        nbformat.write(executed, str(nb_path))

    timings["total"] = time.perf_counter() - t_start
    summary = summary_text(executed)
    if summary:
        log("[report] summary of the run (from the notebook):\n" + summary.rstrip())
    log(
        f"[report] wrote {html_path.resolve()} ({html_path.stat().st_size / 1e6:.1f} MB, {n_figures} figures, plotly.js inlined)"
    )
    log(f"[report] executed notebook: {nb_path.resolve()}")
    log("[report] timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return ReportResult(
        html_path=html_path,
        notebook_path=nb_path,
        timings=timings,
        n_figures=n_figures,
        model_source=source,
        summary=summary,
    )


def main(argv: list[str] | None = None) -> int:
    """``report`` command line: see :func:`run_main_job`."""
    parser = argparse.ArgumentParser(
        prog="python -m part52_grokking_and_modular_arithmetic report",
        description="Provision the model, execute the solutions notebook and write an offline HTML report.",
    )
    parser.add_argument("--out-dir", default="reports", help="output folder (default: reports)")
    parser.add_argument("--notebook", default=None, help="notebook to execute (default: the solutions notebook)")
    parser.add_argument("--run-path", default=None, help="checkpoint-history file (default: the package default)")
    parser.add_argument(
        "--no-training", action="store_true", help="fail instead of training when no model is available"
    )
    parser.add_argument("--cell-timeout", type=int, default=1800, help="per-cell timeout in seconds (default 1800)")
    parser.add_argument(
        "--device",
        default=None,
        help="torch device of the notebook's computations, e.g. cpu or cuda (default: the notebook picks)",
    )
    args = parser.parse_args(argv)
    run_main_job(
        args.out_dir,
        notebook=args.notebook,
        run_path=args.run_path,
        allow_training=not args.no_training,
        cell_timeout=args.cell_timeout,
        device=args.device,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
