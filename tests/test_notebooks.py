"""The course notebooks (built from notebooks/grokking_and_modular_arithmetic.py) and the report main job.

Fast: the committed notebooks match a fresh build and carry no outputs; every exercise stub is followed by its
grader; the notebook's reference solutions pass every grader (on an untrained model, where a model is needed);
the HTML export inlines plotly.js and loads nothing from a CDN.
Slow (``-m slow``): the exercises notebook runs top to bottom on the cached model, and every grader reports
"not implemented yet" instead of failing. The solutions notebook itself is run by ``pytest --nbmake``; both
notebooks on a small-p run: tests/test_notebook_any_run.py.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
import torch

from part52_grokking_and_modular_arithmetic import tests as grader
from part52_grokking_and_modular_arithmetic import utils
from part52_grokking_and_modular_arithmetic.app import report

REPO = Path(__file__).resolve().parents[1]


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()
GRADER_CALL = re.compile(r"tests\.(test_\w+)\(([^\n]*)\)")


@pytest.fixture(scope="module")
def notebooks() -> dict[str, nbformat.NotebookNode]:
    return {
        "exercises": nbformat.read(str(build.EXERCISES), as_version=4),
        "solutions": nbformat.read(str(build.SOLUTIONS), as_version=4),
    }


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _stub_cells(nb):
    return [c for c in _code_cells(nb) if "# YOUR CODE HERE" in c.source]


def _stub_names(cell) -> tuple[str, list[str]]:
    """("function", [name]) for a function stub, ("values", [names]) for a values-to-compute stub."""
    tree = ast.parse(cell.source)
    defs = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    if defs:
        return "function", defs
    names = [
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    ]
    return "values", names


def _grader_cells(nb):
    return [c for c in _code_cells(nb) if GRADER_CALL.search(c.source)]


# ------------------------------------------------------------------------------------------ build + sync


def test_committed_notebooks_match_a_fresh_build():
    stale = build.check()
    assert not stale, (
        f"run `python scripts/build_notebooks.py`: {[str(p.relative_to(REPO)) for p in stale]} out of date"
    )


def test_build_is_deterministic():
    first = build.built_notebooks()
    assert first == build.built_notebooks()


def test_no_outputs_and_python3_kernel(notebooks):
    for name, nb in notebooks.items():
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        assert nb.metadata["kernelspec"]["display_name"] == "Python 3", name
        assert set(nb.metadata) <= {"kernelspec", "language_info"}, (
            f"{name}: stray notebook metadata {set(nb.metadata)}"
        )
        ids = [c.id for c in nb.cells]
        assert len(ids) == len(set(ids)), f"{name}: duplicate cell ids"
        for cell in _code_cells(nb):
            assert cell.outputs == [], f"{name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, f"{name}: cell {cell.id} has an execution count"


def test_solution_markers_are_gone_from_both_notebooks(notebooks):
    for name, nb in notebooks.items():
        for cell in nb.cells:
            assert build.BEGIN not in cell.source and build.END not in cell.source, f"{name}: cell {cell.id}"


def test_stub_replacement_rules(tmp_path):
    src = tmp_path / "nb.py"
    src.write_text(
        "# %%\n"
        "def f(x):\n"
        '    """Doc."""\n'
        "    ### BEGIN SOLUTION\n"
        "    return x + 1\n"
        "    ### END SOLUTION\n"
        "\n"
        "# %%\n"
        "### BEGIN SOLUTION\n"
        "a, b = 1, 2\n"
        "c = a + b\n"
        "### END SOLUTION\n"
        "print(c)\n"
    )
    ex = build.build_notebook(src, exercises=True)
    sol = build.build_notebook(src, exercises=False)
    assert ex.cells[0].source == 'def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError()'
    assert ex.cells[1].source == "# YOUR CODE HERE\na = None\nb = None\nc = None\nprint(c)"
    assert sol.cells[0].source == 'def f(x):\n    """Doc."""\n    return x + 1'
    assert sol.cells[1].source == "a, b = 1, 2\nc = a + b\nprint(c)"
    assert [c.id for c in ex.cells] == [c.id for c in sol.cells]


@pytest.mark.parametrize(
    "body, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "nested"),
        ("### BEGIN SOLUTION\n### END SOLUTION\n", "empty"),
    ],
)
def test_malformed_markers_are_reported(tmp_path, body, message):
    src = tmp_path / "nb.py"
    src.write_text("# %%\n" + body)
    with pytest.raises(build.BuildError, match=message):
        build.build_notebook(src, exercises=True)


def test_check_mode_flags_a_stale_notebook(tmp_path, monkeypatch):
    ex, sol = tmp_path / "ex.ipynb", tmp_path / "sol.ipynb"
    monkeypatch.setattr(build, "EXERCISES", ex)
    monkeypatch.setattr(build, "SOLUTIONS", sol)
    assert build.main([]) == 0 and ex.is_file() and sol.is_file()
    assert build.main(["--check"]) == 0
    ex.write_text(ex.read_text().replace("Grokking", "Grokkink", 1))
    assert build.main(["--check"]) == 1


# ------------------------------------------------------------------------------------------ exercises <-> graders


def test_every_stub_is_followed_by_its_grader(notebooks):
    cells = _code_cells(notebooks["exercises"])
    stubs = _stub_cells(notebooks["exercises"])
    assert len(stubs) >= 15
    for stub in stubs:
        kind, names = _stub_names(stub)
        assert names, f"stub cell {stub.id} defines nothing"
        following = cells[cells.index(stub) + 1 :]
        grader_cell = next((c for c in following if GRADER_CALL.search(c.source)), None)
        assert grader_cell is not None, f"stub {names} has no grader after it"
        between = following[: following.index(grader_cell)]
        assert all("# YOUR CODE HERE" not in c.source for c in between), (
            f"stub {names}: another exercise comes before its grader"
        )
        test_name, args = GRADER_CALL.search(grader_cell.source).groups()
        if kind == "function":
            assert test_name == f"test_{names[0]}", f"stub {names[0]} is followed by {test_name}"
            assert args.split(",")[0].strip() == names[0]
        else:
            passed = [a.strip() for a in args.split(",")]
            assert passed[: len(names)] == names, f"values {names} are not what {test_name} receives ({passed})"


def test_exercises_match_solutions_and_graders(notebooks):
    ex, sol = notebooks["exercises"], notebooks["solutions"]
    assert [c.id for c in ex.cells] == [c.id for c in sol.cells]
    sol_by_id = {c.id: c for c in sol.cells}
    for stub in _stub_cells(ex):
        solved = sol_by_id[stub.id]
        assert "NotImplementedError" not in solved.source and "# YOUR CODE HERE" not in solved.source
        assert _stub_names(stub)[1] == _stub_names(solved)[1] or _stub_names(stub)[0] == "values"
    # grader cells are identical in both notebooks, and every grader of tests.py is used exactly once
    ex_calls = [GRADER_CALL.search(c.source).group(1) for c in _grader_cells(ex)]
    sol_calls = [GRADER_CALL.search(c.source).group(1) for c in _grader_cells(sol)]
    assert ex_calls == sol_calls
    assert sorted(ex_calls) == sorted(n for n in grader.__all__ if n.startswith("test_"))
    assert len(set(ex_calls)) == len(ex_calls)
    # function exercises carry the public names of the reference solutions
    from part52_grokking_and_modular_arithmetic import solutions

    for stub in _stub_cells(ex):
        kind, names = _stub_names(stub)
        if kind == "function":
            assert names[0] in solutions.__all__, f"{names[0]} is not a public solution name"


def test_exercises_notebook_has_every_published_exercise(notebooks):
    """At least the published chapter's 15 coding exercises are stubs (NotImplementedError or `= None`)."""
    stubs = _stub_cells(notebooks["exercises"])
    kinds = [_stub_names(c)[0] for c in stubs]
    assert len(stubs) >= 15, f"only {len(stubs)} exercise stubs"
    for cell in stubs:
        assert "raise NotImplementedError()" in cell.source or re.search(r"^\w+ = None$", cell.source, re.M), (
            cell.source
        )
    functions = {name for c in stubs for name in _stub_names(c)[1] if _stub_names(c)[0] == "function"}
    assert {"functional_form_logits", "mean_sq_fourier_coefficients", "fit_quadratic_terms"} <= functions
    assert kinds.count("function") >= 13


def test_every_grader_named_in_the_notebook_exists(notebooks):
    """Every `tests.test_...` the notebooks call (in any cell, not only grader cells) is a public grader."""
    public = {n for n in grader.__all__ if n.startswith("test_")}
    for name, nb in notebooks.items():
        called = {m.group(1) for c in _code_cells(nb) for m in GRADER_CALL.finditer(c.source)}
        assert called, f"{name}: no grader calls found"
        missing = called - public
        assert not missing, f"{name} calls graders that tests.py does not define: {sorted(missing)}"
        assert all(callable(getattr(grader, n)) for n in called)


def test_grader_cells_use_only_setup_objects(notebooks):
    """A grader call must not depend on the result of an earlier student function (only on the function itself,
    the values the exercise asks for, and setup objects), so 'Run all' on the exercises reaches every grader."""
    setup_names = {"model", "cache", "p", "utils", "train_indices", "full_run_data", "tests"}
    ex = notebooks["exercises"]
    for cell in _grader_cells(ex):
        test_name, args = GRADER_CALL.search(cell.source).groups()
        used = {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)}
        exercise_names = set(re.findall(r"^\s*(\w+)", args.split(",")[0]))
        if test_name in ("test_cache_activations", "test_effective_weights"):
            exercise_names |= {a.strip() for a in args.split(",")[:3]}
        assert used <= setup_names | exercise_names, f"{test_name} uses {used - setup_names - exercise_names}"


# ------------------------------------------------------------------------------------------ solutions pass the graders


@pytest.fixture(scope="module")
def solution_namespace(p113_model):
    """Execute the solution cells of the notebook (and nothing else) against an untrained p = 113 model."""
    import math

    import einops
    import numpy as np
    from jaxtyping import Float, Int
    from torch import Tensor
    from transformer_lens import ActivationCache, HookedTransformer

    model = p113_model
    p = 113
    all_data = utils.make_all_data(p)
    train_indices, _ = utils.train_test_split(p, 0.3, 0)
    with torch.no_grad():
        _, cache = model.run_with_cache(all_data)
    ns = dict(
        torch=torch,
        math=math,
        einops=einops,
        np=np,
        utils=utils,
        tests=grader,
        Float=Float,
        Int=Int,
        Tensor=Tensor,
        ActivationCache=ActivationCache,
        HookedTransformer=HookedTransformer,
        p=p,
        cfg=model.cfg,
        model=model,
        cache=cache,
        all_data=all_data,
        train_indices=train_indices,
        test_logits=utils.test_logits,
        W_O=model.W_O[0],
        W_K=model.W_K[0],
        W_Q=model.W_Q[0],
        W_V=model.W_V[0],
        W_in=model.W_in[0],
        W_out=model.W_out[0],
        W_pos=model.W_pos,
        W_E=model.W_E[:-1],
        W_U=model.W_U[:, :-1],
        final_pos_resid_initial=model.W_E[-1] + model.W_pos[2],
    )
    nb = nbformat.read(str(build.SOLUTIONS), as_version=4)
    ex = nbformat.read(str(build.EXERCISES), as_version=4)
    solution_ids = {c.id for c in _stub_cells(ex)}
    with torch.no_grad():
        for cell in nb.cells:
            if cell.id in solution_ids:
                exec(compile(cell.source, f"<solution cell {cell.id}>", "exec"), ns)
                if "make_fourier_basis" in ns and "fourier_basis" not in ns:
                    ns["fourier_basis"], ns["fourier_basis_names"] = ns["make_fourier_basis"](p)
    return ns


def test_notebook_solutions_pass_every_grader(solution_namespace, capsys):
    ns = solution_namespace
    model, p = ns["model"], ns["p"]
    with torch.no_grad():
        results = {
            "test_cache_activations": grader.test_cache_activations(
                ns["attn_mat"], ns["neuron_acts_post"], ns["neuron_acts_pre"], ns["cache"]
            ),
            "test_effective_weights": grader.test_effective_weights(ns["W_logit"], ns["W_neur"], ns["W_attn"], model),
            "test_functional_form_logits": grader.test_functional_form_logits(ns["functional_form_logits"], model),
            "test_make_fourier_basis": grader.test_make_fourier_basis(ns["make_fourier_basis"], p),
            "test_fft1d": grader.test_fft1d(ns["fft1d"], p),
            "test_fourier_2d_basis_term": grader.test_fourier_2d_basis_term(ns["fourier_2d_basis_term"], p),
            "test_fft2d": grader.test_fft2d(ns["fft2d"], p),
            "test_mean_sq_fourier_coefficients": grader.test_mean_sq_fourier_coefficients(
                ns["mean_sq_fourier_coefficients"]
            ),
            "test_fit_quadratic_terms": grader.test_fit_quadratic_terms(ns["fit_quadratic_terms"]),
            "test_find_neuron_freqs": grader.test_find_neuron_freqs(ns["find_neuron_freqs"], p),
            "test_project_onto_direction": grader.test_project_onto_direction(ns["project_onto_direction"]),
            "test_project_onto_frequency": grader.test_project_onto_frequency(ns["project_onto_frequency"], p),
            "test_get_trig_sum_directions": grader.test_get_trig_sum_directions(ns["get_trig_sum_directions"], p),
            "test_excl_loss": grader.test_excl_loss(
                ns["excl_loss"], model, [14, 35, 56], train_indices=ns["train_indices"]
            ),
            "test_fourier_embed": grader.test_fourier_embed(ns["fourier_embed"], model),
            "test_embed_SVD": grader.test_embed_SVD(ns["embed_SVD"], model),
        }
    assert sorted(results) == sorted(n for n in grader.__all__ if n.startswith("test_"))
    # a grader prints its verdict and returns None (a wrong answer raises GraderError, which fails this test)
    assert all(verdict is None for verdict in results.values())
    out = capsys.readouterr().out
    passed = {line.split(":")[0].removeprefix("✅ ") for line in out.splitlines() if line.startswith("✅ ")}
    assert len(passed) == len(results), f"graders not passed by the notebook's solutions:\n{out}"


def test_graders_report_the_stubs_as_not_implemented(tmp_path, capsys):
    stub = build.build_notebook(build.SOURCE, exercises=True)
    fn_stubs = [c for c in _stub_cells(stub) if _stub_names(c)[0] == "function"]
    ns: dict = {}
    header = "from jaxtyping import Float, Int\nfrom torch import Tensor\nfrom transformer_lens import HookedTransformer, ActivationCache\n"
    for cell in fn_stubs:
        exec(compile(header + cell.source, "<stub>", "exec"), ns)
    assert grader.test_fft1d(ns["fft1d"]) is None
    assert grader.test_make_fourier_basis(ns["make_fourier_basis"]) is None
    assert capsys.readouterr().out.count("not implemented yet") == 2


# ------------------------------------------------------------------------------------------ report (HTML export)


def _tiny_notebook_with_a_figure() -> nbformat.NotebookNode:
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 1, 3], name="tiny"))
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    cell = nbformat.v4.new_code_cell("fig.show()")
    cell.outputs = [nbformat.v4.new_output("display_data", data=bundle)]
    md = nbformat.v4.new_markdown_cell("# A tiny report\n\n$x + y$")
    return nbformat.v4.new_notebook(cells=[md, cell], metadata={"kernelspec": dict(build.KERNELSPEC)})


def test_html_export_inlines_plotly_once_and_uses_no_cdn():
    html, n = report.notebook_to_offline_html(_tiny_notebook_with_a_figure())
    assert n == 1
    report.check_offline_html(html, n)
    assert html.count("plotly.js v") == 1  # the bundled library's banner, inlined once
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()) == 1  # the library itself, once (some releases call newPlot inside it)
    assert html.replace(get_plotlyjs(), "").count("Plotly.newPlot(") == 1  # and one figure drawn
    assert not re.search(r"<script[^>]+src=\"https?://[^\"]*plotly", html)
    assert "require.min.js" not in html  # an AMD loader would swallow the inlined plotly.js
    assert html.index(report.PLOTLYJS_MARKER) < html.index("plotly-figure-1")  # library before the figure
    assert '"tiny"' in html  # the figure's data is in the page


def test_check_offline_html_rejects_a_cdn_page():
    html, n = report.notebook_to_offline_html(_tiny_notebook_with_a_figure())
    with pytest.raises(AssertionError, match="network"):
        report.check_offline_html(
            html.replace("</head>", '<script src="https://cdn.plot.ly/plotly-2.0.0.min.js"></script></head>'), n
        )
    with pytest.raises(AssertionError, match="inlined"):
        report.check_offline_html(html.replace(report.PLOTLYJS_MARKER, ""), n)
    with pytest.raises(AssertionError, match="draws"):
        report.check_offline_html(html, n + 1)


def test_summary_text_reads_the_tagged_cell():
    tagged = nbformat.v4.new_code_cell("print(1)", metadata={"tags": [report.SUMMARY_TAG]})
    tagged.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✅ a claim\n")]
    other = nbformat.v4.new_code_cell("print(2)")
    other.outputs = [nbformat.v4.new_output("stream", name="stdout", text="noise\n")]
    nb = nbformat.v4.new_notebook(cells=[other, tagged])
    assert report.summary_text(nb) == "✅ a claim\n"


def test_the_course_notebook_has_a_summary_cell(notebooks):
    tagged = [c for c in notebooks["solutions"].cells if report.SUMMARY_TAG in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "checks" in tagged[0].source


def test_inline_plotly_outputs_leaves_the_original_untouched():
    nb = _tiny_notebook_with_a_figure()
    converted, n = report.inline_plotly_outputs(nb)
    assert n == 1
    assert report.PLOTLY_MIME in nb.cells[1].outputs[0].data  # original kept
    assert set(converted.cells[1].outputs[0].data) == {"text/html"}


@pytest.mark.notebook
def test_run_main_job_on_a_tiny_notebook(tmp_path, monkeypatch):
    """The main job end to end (kernel included) on a two-cell notebook, with provisioning stubbed out."""
    from part52_grokking_and_modular_arithmetic.runs import provision

    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import plotly.io as pio, plotly.graph_objects as go\npio.renderers.default = 'plotly_mimetype'\n"
                "go.Figure(go.Bar(x=['a', 'b'], y=[1, 2])).show()\nprint('hello from the kernel')"
            ),
            nbformat.v4.new_code_cell("print('all checks hold')", metadata={"tags": [report.SUMMARY_TAG]}),
        ],
        metadata={"kernelspec": dict(build.KERNELSPEC)},
    )
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, str(path))
    calls = []
    monkeypatch.setattr(
        provision,
        "load_full_run_data",
        lambda **kw: calls.append(kw) or {"state_dicts": [{}], "epochs": [0], "source": "stub"},
    )
    logged = []
    result = report.run_main_job(tmp_path / "out", notebook=path, allow_training=False, log=logged.append)
    assert calls == [{"allow_training": False}]
    assert result.summary == "all checks hold\n" and any("all checks hold" in line for line in logged)
    assert any(str(result.html_path.resolve()) in line for line in logged)
    html = result.html_path.read_text()
    report.check_offline_html(html, 1)
    assert result.n_figures == 1 and "hello from the kernel" in html
    assert set(result.timings) >= {"model (load_full_run_data)", "export HTML", "total"}
    executed = nbformat.read(str(result.notebook_path), as_version=4)
    assert report.PLOTLY_MIME in executed.cells[0].outputs[0].data or any(
        report.PLOTLY_MIME in o.get("data", {}) for o in executed.cells[0].outputs
    )
