"""The plotting helpers: figures hold exactly the data given (every frame, every point), labels are
right, bad shapes fail with a clear message, and nothing needs the network."""

import numpy as np
import plotly.graph_objects as go
import plotly.offline
import pytest
import torch
from jaxtyping import TypeCheckError

from part52_grokking_and_modular_arithmetic.analysis import plotting as P
from part52_grokking_and_modular_arithmetic.analysis.fourier import fourier_basis_names

BAD_INPUT = (ValueError, TypeCheckError)
P_SMALL = 7


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _slider_labels(fig):
    return [step.label for step in fig.layout.sliders[0].steps]


# ---------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("kind", ["tensor", "numpy", "list"])
def test_to_numpy_accepts_tensors_arrays_and_lists(kind):
    values = [[1.0, 2.0], [3.0, 4.0]]
    data = {
        "tensor": torch.tensor(values, requires_grad=True) * 1,  # non-leaf with grad: must be detached
        "numpy": np.array(values),
        "list": values,
    }[kind]
    np.testing.assert_allclose(P.to_numpy(data), np.array(values))


def test_to_numpy_handles_bfloat16_and_lists_of_tensors():
    np.testing.assert_allclose(P.to_numpy(torch.ones(3, dtype=torch.bfloat16)), np.ones(3))
    np.testing.assert_allclose(P.to_numpy([torch.zeros(2), torch.ones(2)]), [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="ragged"):
        P.to_numpy([torch.zeros(2), torch.ones(3)])


@pytest.mark.parametrize(
    "convert", [lambda t: t, lambda t: t.numpy(), lambda t: t.tolist()], ids=["tensor", "numpy", "list"]
)
def test_every_helper_accepts_each_input_kind(convert):
    g = _gen()
    grid = convert(torch.randn(P_SMALL, P_SMALL, generator=g))
    series = convert(torch.randn(4, 9, generator=g))
    for fig in [
        P.imshow(grid),
        P.imshow_div(grid),
        P.inputs_heatmap(grid),
        P.imshow_fourier(grid),
        P.line(series),
        P.lines(series),
        P.scatter(series[0], series[1]),
        P.animate_lines(series),
        P.animate_multi_lines([series, series]),
        P.animate_scatter(series, series),
    ]:
        assert isinstance(fig, go.Figure)


# -------------------------------------------------------------------------------------------- heatmaps


def test_imshow_holds_the_data_and_labels():
    data = torch.arange(6.0).reshape(2, 3)
    fig = P.imshow(data, x=["a", "b", "c"], y=["r0", "r1"], title="T", xaxis="cols", yaxis="rows")
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Heatmap)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), data.numpy())
    assert list(fig.data[0].x) == ["a", "b", "c"] and list(fig.data[0].y) == ["r0", "r1"]
    assert fig.layout.title.text == "T"
    assert fig.layout.xaxis.title.text == "cols" and fig.layout.yaxis.title.text == "rows"


def test_imshow_facets_and_animation_with_labels():
    data = torch.randn(3, 5, 4, 2, generator=_gen())  # (rows, cols, facet, frame)
    fig = P.imshow(
        data,
        facet_col=2,
        facet_labels=["w", "x", "y", "z"],
        animation_frame=3,
        animation_labels=[100, 200],
        animation_name="epoch",
    )
    assert len(fig.data) == 4 and len(fig.frames) == 2
    assert sorted(a.text for a in fig.layout.annotations) == ["w", "x", "y", "z"]
    assert _slider_labels(fig) == ["100", "200"]
    assert fig.layout.sliders[0].currentvalue.prefix == "epoch="
    # every frame carries its own slice of the data (not a copy of frame 0)
    np.testing.assert_allclose(np.asarray(fig.frames[1].data[0].z), data[:, :, 0, 1].numpy(), rtol=1e-6)


def test_imshow_animation_shares_one_colour_range():
    data = torch.stack([torch.zeros(3, 3), torch.full((3, 3), 10.0)])
    fig = P.imshow(data, animation_frame=0)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 10.0)


def test_imshow_div_is_centred_on_zero():
    data = torch.tensor([[-1.0, 3.0], [0.5, 2.0]])
    fig = P.imshow_div(data)
    assert fig.layout.coloraxis.cmin == -3.0 and fig.layout.coloraxis.cmax == 3.0
    assert fig.layout.coloraxis.colorscale[0][1] != fig.layout.coloraxis.colorscale[-1][1]


@pytest.mark.parametrize(
    "shape, kwargs, match",
    [
        ((2, 3, 4), {}, "facet_col"),
        ((5,), {}, "2-D grid"),
        ((2, 3), {"x": ["a", "b"]}, "one label per column"),
        ((2, 3, 4), {"facet_col": 2, "facet_labels": ["a"]}, "facet_labels"),
        ((2, 3, 4), {"facet_col": 2, "animation_frame": 2}, "different dims"),
    ],
)
def test_imshow_bad_shapes_explain_what_was_expected(shape, kwargs, match):
    with pytest.raises(BAD_INPUT, match=match):
        P.imshow(torch.zeros(shape), **kwargs)


@pytest.mark.parametrize("flat", [True, False])
def test_inputs_heatmap_puts_x_on_rows_and_y_on_columns(flat):
    p = P_SMALL
    x, y = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    values = (10 * x + y).float()  # value at (x, y) = 10 x + y
    fig = P.inputs_heatmap(values.flatten() if flat else values)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (p, p)
    assert z[2, 5] == 25  # row = x = 2, column = y = 5
    assert fig.layout.yaxis.title.text == "x" and fig.layout.xaxis.title.text == "y"


def test_inputs_heatmap_facets_by_default_and_animates_on_request():
    data = torch.randn(P_SMALL**2, 3, generator=_gen())
    faceted = P.inputs_heatmap(data, facet_labels=["h0", "h1", "h2"])
    assert len(faceted.data) == 3 and not faceted.frames
    assert sorted(a.text for a in faceted.layout.annotations) == ["h0", "h1", "h2"]
    np.testing.assert_allclose(np.asarray(faceted.data[2].z), data[:, 2].reshape(P_SMALL, P_SMALL).numpy(), rtol=1e-6)
    animated = P.inputs_heatmap(data, animation_frame=2, animation_name="head")
    assert len(animated.frames) == 3 and animated.layout.sliders[0].currentvalue.prefix == "head="


@pytest.mark.parametrize("shape", [(50,), (6, 7), (50, 3), (6, 6, 2, 2, 2)])
def test_inputs_heatmap_rejects_shapes_that_are_not_input_grids(shape):
    with pytest.raises(BAD_INPUT, match="p\\^2|2-D grid"):
        P.inputs_heatmap(torch.zeros(shape))


def test_inputs_heatmap_rejects_a_p_that_does_not_fit():
    with pytest.raises(BAD_INPUT, match="p = 5"):
        P.inputs_heatmap(torch.zeros(49), p=5)


def test_imshow_fourier_ticks_are_the_basis_names():
    p = 11
    fig = P.imshow_fourier(torch.randn(p, p, generator=_gen()))
    names = fourier_basis_names(p)
    assert list(fig.data[0].x) == names and list(fig.data[0].y) == names
    assert names[0] == "const" and names[-1] == f"sin {(p - 1) // 2}"
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax  # diverging, centred at 0


def test_imshow_fourier_facets_each_panel_with_names():
    fig = P.imshow_fourier(torch.randn(5, 5, 3, generator=_gen()))
    assert len(fig.data) == 3 and all(list(trace.x) == fourier_basis_names(5) for trace in fig.data)


@pytest.mark.parametrize("shape", [(5, 6), (6, 6), (5,), (1, 1)])
def test_imshow_fourier_rejects_non_basis_shapes(shape):
    with pytest.raises(BAD_INPUT, match="p odd"):
        P.imshow_fourier(torch.zeros(shape))


# ---------------------------------------------------------------------------------------- lines/scatter


def test_line_one_row_or_many_rows():
    single = P.line(torch.arange(5.0), x=[10, 20, 30, 40, 50], hover=list("abcde"), log_y=True)
    assert len(single.data) == 1
    assert list(single.data[0].x) == [10, 20, 30, 40, 50] and list(single.data[0].hovertext) == list("abcde")
    assert single.layout.yaxis.type == "log"
    many = P.line(torch.randn(3, 5, generator=_gen()), labels=["a", "b", "c"])
    assert [trace.name for trace in many.data] == ["a", "b", "c"]


def test_lines_with_one_x_per_line_of_different_lengths():
    train = torch.linspace(1, 0.1, 100)
    test = torch.linspace(2, 0.2, 10)
    fig = P.lines([train, test], x=[torch.arange(100), torch.arange(0, 100, 10)], labels=["train", "test"])
    assert [len(trace.y) for trace in fig.data] == [100, 10]
    assert list(fig.data[1].x) == list(range(0, 100, 10))
    assert [trace.name for trace in fig.data] == ["train", "test"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: P.line(torch.zeros(2, 3, 4)), "n_lines, n_points"),
        (lambda: P.line(torch.zeros(5), x=[1, 2]), "x has 2 values"),
        (lambda: P.lines([torch.zeros(3), torch.zeros(4)], labels=["one"]), "one per line"),
        (lambda: P.lines([]), "at least one line"),
        (lambda: P.scatter([1, 2, 3], [1, 2]), "same length"),
        (lambda: P.scatter([1, 2], [1, 2], color=[0.5]), "one value per point"),
    ],
)
def test_lines_and_scatter_bad_inputs(call, match):
    with pytest.raises(BAD_INPUT, match=match):
        call()


def test_scatter_numeric_colour_gets_a_colour_bar_and_strings_get_a_legend():
    numeric = P.scatter([1, 2, 3], [4, 5, 6], color=torch.tensor([0.1, 0.5, 0.9]), color_label="frac firing")
    assert len(numeric.data) == 1 and list(numeric.data[0].marker.color) == pytest.approx([0.1, 0.5, 0.9])
    assert numeric.data[0].marker.colorbar.title.text == "frac firing"
    grouped = P.scatter([1, 2, 3], [4, 5, 6], color=["14", "35", "14"], hover=["n0", "n1", "n2"])
    assert [trace.name for trace in grouped.data] == ["14", "35"]
    assert list(grouped.data[0].hovertext) == ["n0", "n2"] and list(grouped.data[0].x) == [1, 3]


# ------------------------------------------------------------------------------------------- animations


def test_animate_lines_has_one_frame_per_row_and_fixed_axes():
    data = torch.rand(6, 9, generator=_gen()) * torch.arange(1, 7)[:, None]
    fig = P.animate_lines(data, frame_labels=[0, 100, 200, 300, 400, 500], animation_name="epoch")
    assert len(fig.frames) == 6
    for f, frame in enumerate(fig.frames):
        np.testing.assert_allclose(np.asarray(frame.data[0].y), data[f].numpy(), rtol=1e-6)
    assert _slider_labels(fig) == ["0", "100", "200", "300", "400", "500"]
    low, high = fig.layout.yaxis.range
    assert low <= data.min().item() and high >= data.max().item()


def test_animate_multi_lines_keeps_every_line_in_every_frame():
    data = torch.randn(3, 4, 5, generator=_gen())  # (n_lines, n_frames, n_points)
    fig = P.animate_multi_lines(data, labels=["a", "b", "c"], x=[0, 2, 4, 6, 8])
    assert len(fig.frames) == 4 and all(len(frame.data) == 3 for frame in fig.frames)
    np.testing.assert_allclose(np.asarray(fig.frames[3].data[1].y), data[1, 3].numpy(), rtol=1e-6)
    assert [trace.name for trace in fig.data] == ["a", "b", "c"]
    from_list = P.animate_multi_lines(list(data))
    np.testing.assert_allclose(np.asarray(from_list.frames[2].data[0].y), data[0, 2].numpy(), rtol=1e-6)


def test_animate_scatter_uses_every_frame_and_every_point():
    n_frames, n_points = 7, 13  # the published helper kept only the first two rows
    x = torch.randn(n_frames, n_points, generator=_gen(1))
    y = torch.randn(n_frames, n_points, generator=_gen(2))
    colour = torch.rand(n_frames, n_points, generator=_gen(3))
    fig = P.animate_scatter(
        x,
        y,
        color=colour,
        hover=[f"n{i}" for i in range(n_points)],
        frame_labels=list(range(0, 700, 100)),
        animation_name="epoch",
    )
    assert len(fig.frames) == n_frames and len(fig.layout.sliders[0].steps) == n_frames
    for f, frame in enumerate(fig.frames):
        (trace,) = frame.data
        assert len(trace.x) == len(trace.y) == n_points
        np.testing.assert_allclose(np.asarray(trace.x), x[f].numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(trace.y), y[f].numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(trace.marker.color), colour[f].numpy(), rtol=1e-6)
    x_low, x_high = fig.layout.xaxis.range
    assert x_low <= x.min().item() and x_high >= x.max().item()


def test_animate_scatter_broadcasts_fixed_coordinates():
    x = torch.arange(5.0)  # the same x every frame (e.g. neuron index)
    y = torch.rand(3, 5, generator=_gen())
    fig = P.animate_scatter(x, y)
    assert len(fig.frames) == 3
    assert all(list(frame.data[0].x) == [0, 1, 2, 3, 4] for frame in fig.frames)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: P.animate_lines(torch.zeros(5)), "n_frames, n_points"),
        (lambda: P.animate_lines(torch.zeros(3, 4), frame_labels=[1, 2]), "one per frame"),
        (lambda: P.animate_multi_lines([torch.zeros(2, 3), torch.zeros(2, 4)]), "same"),
        (lambda: P.animate_scatter(torch.zeros(3, 4), torch.zeros(2, 4)), "frames"),
        (lambda: P.animate_scatter(torch.zeros(3, 4), torch.zeros(3, 5)), "same number of points"),
        (lambda: P.animate_scatter(torch.zeros(3, 4, 2), torch.zeros(3, 4)), "n_frames, n_points"),
    ],
)
def test_animation_bad_shapes(call, match):
    with pytest.raises(BAD_INPUT, match=match):
        call()


# ------------------------------------------------------------------------------------ phases, offline, show


# the phases the paper names for its mainline run (epochs)
PAPER_PHASES = (("memorisation", 0, 1_400), ("circuit formation", 1_400, 9_400), ("cleanup", 9_400, 14_000))


def test_mark_phases_shades_and_draws_boundaries():
    fig = P.line(torch.rand(100), x=torch.arange(0, 15_000, 150))
    out = P.mark_phases(fig, PAPER_PHASES)
    assert out is fig
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    vlines = sorted(s.x0 for s in fig.layout.shapes if s.type == "line")
    assert len(rects) == 3 and vlines == [0, 1_400, 9_400, 14_000]
    assert [a.text for a in fig.layout.annotations] == ["memorisation", "circuit formation", "cleanup"]


def test_mark_phases_accepts_a_mapping_and_rejects_backwards_spans():
    fig = P.mark_phases(P.line([1, 2, 3]), {"early": (0, 1), "late": (1, 2)}, boundaries=False)
    assert len(fig.layout.shapes) == 2
    with pytest.raises(BAD_INPUT, match="start before it ends"):
        P.mark_phases(P.line([1, 2, 3]), [("bad", 5, 2)])


def test_figures_embed_plotly_js_and_link_to_no_cdn():
    fig = P.imshow_fourier(torch.randn(5, 5, generator=_gen()))
    page = fig.to_html(include_plotlyjs=True)
    assert plotly.offline.get_plotlyjs() in page  # the whole bundle, inline
    assert "<script src=" not in page.replace(" ", "")  # no external script (CDN) to fetch


@pytest.mark.parametrize(
    "make",
    [
        lambda **o: P.lines([[1.0, 2.0, 4.0]], **o),
        lambda **o: P.scatter([1.0, 2.0, 4.0], [1.0, 10.0, 100.0], **o),
        lambda **o: P.animate_multi_lines([[[1.0, 2.0, 4.0], [2.0, 3.0, 5.0]]], **o),
        lambda **o: P.animate_scatter([[1.0, 2.0, 4.0]], [[1.0, 10.0, 100.0]], **o),
    ],
    ids=["lines", "scatter", "animate_multi_lines", "animate_scatter"],
)
def test_shared_figure_options_reach_every_line_and_scatter_helper(make):
    fig = make(title="T", xaxis="epoch", yaxis="loss", log_x=True, log_y=True, width=321)
    assert fig.layout.title.text == "T" and fig.layout.width == 321
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.title.text == "loss"
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    if fig.frames:  # animations pin their ranges, in log10 units on a log axis
        assert fig.layout.yaxis.range[1] < 3
    with pytest.raises(ValueError):
        make(not_a_layout_property=1)


def test_helpers_do_not_show_by_default(monkeypatch):
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    P.line([1, 2, 3])
    P.imshow_fourier(torch.zeros(5, 5))
    P.animate_scatter(torch.zeros(2, 3), torch.zeros(2, 3))
    assert shown == []
    fig = P.line([1, 2, 3], show=True)
    assert shown == [fig]
