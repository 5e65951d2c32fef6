"""Plotly helpers for the chapter's figures: each **returns** a ``go.Figure`` (shown only with ``show=True``).

Inputs may be tensors (any device/dtype, with grad or not), numpy arrays or (nested) lists. Shared keywords:
``title``, ``xaxis``, ``yaxis``, ``log_x`` / ``log_y``; ``hover`` (one name per point); ``facet_col`` /
``facet_labels`` / ``facet_name`` and ``animation_frame`` / ``animation_labels`` / ``animation_name`` (split or
animate a heatmap along a dim); ``frame_labels`` (slider labels of animated lines and scatters); ``show``; any
other keyword goes to ``fig.update_layout``. Animations keep axis and colour ranges fixed over all frames.
Input grids (batch index ``x * p + y``) show **rows = x**, **columns = y**. plotly.js is bundled (offline).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.colors import qualitative
from torch import Tensor

from .fourier import fourier_basis_names

__all__ = [
    "ArrayLike",
    "to_numpy",
    "imshow",
    "imshow_div",
    "inputs_heatmap",
    "imshow_fourier",
    "line",
    "lines",
    "scatter",
    "animate_lines",
    "animate_multi_lines",
    "animate_scatter",
    "mark_phases",
]

ArrayLike = Tensor | np.ndarray | Sequence[Any]  # a tensor, a numpy array, or a (nested) list/tuple of numbers

_COLOURS = qualitative.Plotly


def to_numpy(data: ArrayLike | Real) -> np.ndarray:
    """A tensor / array / (nested) list as a numpy array (half precision upcast to float32; ragged lists raise)."""
    if isinstance(data, Tensor):
        t = data.detach().cpu()
        return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, (list, tuple)) and any(isinstance(item, (Tensor, np.ndarray, list, tuple)) for item in data):
        parts = [to_numpy(item) for item in data]
        shapes = {part.shape for part in parts}
        if len(shapes) > 1:
            raise ValueError(f"cannot stack a ragged list into one array: its items have shapes {sorted(shapes)}")
        return np.stack(parts) if parts else np.asarray([])
    return np.asarray(data)


def _array(data: ArrayLike, name: str, ndims: tuple[int, ...] | None = None, expected: str = "") -> np.ndarray:
    """``to_numpy(data)`` (booleans as floats), checked to have one of the ranks ``ndims``."""
    arr = to_numpy(data)
    if ndims is not None and arr.ndim not in ndims:
        raise ValueError(f"{name} must have shape {expected}, got shape {arr.shape}")
    return arr.astype(np.float32) if arr.dtype == bool else arr


def _labels(values: ArrayLike | None, length: int, name: str) -> list[Any] | None:
    if values is None:
        return None
    out = list(values) if isinstance(values, (list, tuple)) else to_numpy(values).tolist()
    if len(out) != length:
        raise ValueError(f"{name} must have one entry per item ({length}), got {len(out)}")
    return out


def _finish(
    fig: go.Figure,
    *,
    title: str = "",
    xaxis: str | None = None,
    yaxis: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    show: bool = False,
    **layout: Any,
) -> go.Figure:
    fig.update_layout(title=title or None, **layout)
    for update, axis_title, log in ((fig.update_xaxes, xaxis, log_x), (fig.update_yaxes, yaxis, log_y)):
        update(**({"title_text": axis_title} if axis_title is not None else {}), **({"type": "log"} if log else {}))
    if show:
        fig.show()
    return fig


def _finite_range(values: np.ndarray, log: bool = False, pad: float = 0.0) -> list[float] | None:
    """``[low, high]`` of the finite values (log10 for a log axis) widened by ``pad`` of the span; or None."""
    finite = values[np.isfinite(values)].astype(float)
    if log:
        finite = np.log10(finite[finite > 0])
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    margin = pad * (high - low) if high > low else 0.5 * bool(pad)
    return [low - margin, high + margin]


# ---- Heatmaps ------------------------------------------------------------------------------------------------------


def imshow(
    data: ArrayLike,
    *,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    xaxis: str = "",
    yaxis: str = "",
    title: str = "",
    color_label: str = "",
    facet_col: int | None = None,
    facet_labels: ArrayLike | None = None,
    facet_name: str = "facet",
    facet_col_wrap: int | None = 4,
    animation_frame: int | None = None,
    animation_labels: ArrayLike | None = None,
    animation_name: str = "frame",
    midpoint: Real | None = None,
    color_continuous_scale: str | list | None = None,
    zmin: Real | None = None,
    zmax: Real | None = None,
    aspect: str = "auto",
    show: bool = False,
    **layout: Any,
) -> go.Figure:
    """Heatmap of a ``(rows, cols)`` grid, plus one extra dim per ``facet_col`` / ``animation_frame`` (panels /
    frames along that dim). ``x`` / ``y`` label the columns / rows; ``midpoint`` centres a diverging scale. The
    colour range is shared by every panel and frame."""
    arr = _array(data, "data")
    split = [d for d in (facet_col, animation_frame) if d is not None]
    if any(not -arr.ndim <= d < arr.ndim for d in split):
        raise ValueError(f"facet_col/animation_frame dims {split} are out of range for shape {arr.shape}")
    if len({d % arr.ndim for d in split}) < len(split):
        raise ValueError(f"facet_col and animation_frame must be different dims, got {facet_col} and {animation_frame}")
    if arr.ndim != 2 + len(split):
        hint = "" if split else "; pass facet_col=<dim> or animation_frame=<dim> for the extra dims"
        raise ValueError(
            f"imshow expects a 2-D grid (rows, cols) plus one dim per facet_col/animation_frame "
            f"({2 + len(split)}-D here), got shape {arr.shape}{hint}"
        )
    rows_dim, cols_dim = [d for d in range(arr.ndim) if d not in {d % arr.ndim for d in split}]
    x_labels = _labels(x, arr.shape[cols_dim], "x (one label per column)")
    y_labels = _labels(y, arr.shape[rows_dim], "y (one label per row)")
    facets = None if facet_col is None else _labels(facet_labels, arr.shape[facet_col], "facet_labels")
    frames = (
        None if animation_frame is None else _labels(animation_labels, arr.shape[animation_frame], "animation_labels")
    )

    if midpoint is not None:
        limit = (_finite_range(np.abs(arr - midpoint)) or [0.0, 0.0])[1] or 1.0  # the largest distance from it
        zmin = midpoint - limit if zmin is None else zmin
        zmax = midpoint + limit if zmax is None else zmax
        color_continuous_scale = color_continuous_scale or "RdBu"
    elif animation_frame is not None and (full := _finite_range(arr)) is not None:
        # one colour range for the whole animation (otherwise every frame rescales its colours)
        zmin, zmax = full[0] if zmin is None else zmin, full[1] if zmax is None else zmax

    fig = px.imshow(
        arr,
        x=x_labels,
        y=y_labels,
        facet_col=facet_col,
        facet_col_wrap=(facet_col_wrap or None) if facet_col is not None else None,
        animation_frame=animation_frame,
        labels={"x": xaxis, "y": yaxis, "color": color_label},
        color_continuous_scale=color_continuous_scale,
        zmin=zmin,
        zmax=zmax,
        aspect=aspect,
    )
    for annotation in fig.layout.annotations:  # plotly titles the panels "facet_col=i"
        if match := re.fullmatch(r"facet_col=(\d+)", annotation.text or ""):
            i = int(match.group(1))
            annotation.text = str(facets[i]) if facets is not None else f"{facet_name}={i}"
    for slider in fig.layout.sliders:
        slider.currentvalue.prefix = f"{animation_name}="
        for step, label in zip(slider.steps, frames or [], strict=bool(frames)):
            step.label = str(label)
    return _finish(fig, title=title, show=show, **layout)  # px already titled the axes (outer panels only)


def imshow_div(data: ArrayLike, *, midpoint: Real = 0.0, **kwargs: Any) -> go.Figure:
    """:func:`imshow` with a diverging red-white-blue scale, white at ``midpoint`` (0), for signed quantities."""
    return imshow(data, midpoint=midpoint, **kwargs)


def _grid_heatmap(grid: np.ndarray, facet_col: int | None, animation_frame: int | None, **kwargs: Any) -> go.Figure:
    if grid.ndim == 3 and facet_col is None and animation_frame is None:
        facet_col = 2
    return imshow(grid, facet_col=facet_col, animation_frame=animation_frame, **kwargs)


def inputs_heatmap(
    data: ArrayLike,
    *,
    p: int | None = None,
    facet_col: int | None = None,
    animation_frame: int | None = None,
    xaxis: str = "y",
    yaxis: str = "x",
    aspect: str = "equal",
    **kwargs: Any,
) -> go.Figure:
    """Heatmap of a quantity on every input pair, rows = x, columns = y (batch index ``x * p + y``).

    Shapes: ``(p^2,)`` / ``(p, p)``; ``(p^2, n)`` / ``(p, p, n)`` for n maps (panels, or ``animation_frame=2``);
    ``(p^2, n, m)`` / ``(p, p, n, m)`` with both ``facet_col`` and ``animation_frame``. ``p`` is inferred
    unless given. Other keywords go to :func:`imshow`.
    """
    arr = to_numpy(data)
    shape = arr.shape
    expected = "(p^2,), (p^2, n), (p, p) or (p, p, n): one entry per input pair (x, y), batch index x*p + y"
    if p is None and len(shape) >= 2 and shape[0] == shape[1] > 1:
        p = shape[0]
    elif p is None and len(shape) >= 1 and math.isqrt(shape[0]) ** 2 == shape[0] and shape[0] > 1:
        p = math.isqrt(shape[0])
    if p is None or not (shape[:1] == (p * p,) or shape[:2] == (p, p)):
        fit = "" if p is None else f" with p = {p}"
        raise ValueError(f"inputs_heatmap expects shape {expected}{fit}, got {shape} (pass p= to disambiguate)")
    grid = arr.reshape(p, p, *shape[1:]) if shape[0] == p * p and shape[:2] != (p, p) else arr
    return _grid_heatmap(grid, facet_col, animation_frame, xaxis=xaxis, yaxis=yaxis, aspect=aspect, **kwargs)


def imshow_fourier(
    data: ArrayLike,
    *,
    facet_col: int | None = None,
    animation_frame: int | None = None,
    xaxis: str = "Fourier component of y",
    yaxis: str = "Fourier component of x",
    midpoint: Real | None = 0.0,
    aspect: str = "equal",
    **kwargs: Any,
) -> go.Figure:
    """Heatmap in the 2D Fourier basis (axes "const", "cos 1", "sin 1", …): ``(p, p)`` (e.g. ``fft2d``'s output,
    rows = x's component), ``(p, p, n)`` or ``(p, p, n, m)`` as in :func:`inputs_heatmap`; p odd. Diverging
    colours at 0 (``midpoint=None``: sequential). Other keywords go to :func:`imshow`."""
    arr = to_numpy(data)
    if arr.ndim < 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 3 or arr.shape[0] % 2 == 0:
        raise ValueError(
            "imshow_fourier expects shape (p, p) or (p, p, n) with p odd (one row/column per Fourier "
            f"basis vector, e.g. the output of fft2d), got {arr.shape}"
        )
    names = fourier_basis_names(arr.shape[0])
    labels = {"x": names, "y": names, "xaxis": xaxis, "yaxis": yaxis}
    return _grid_heatmap(arr, facet_col, animation_frame, midpoint=midpoint, aspect=aspect, **labels, **kwargs)


# ---- Lines and scatters --------------------------------------------------------------------------------------------


def lines(
    ys: ArrayLike | Sequence[ArrayLike],
    *,
    x: ArrayLike | Sequence[ArrayLike] | None = None,
    labels: ArrayLike | None = None,
    hover: ArrayLike | None = None,
    mode: str = "lines",
    **options: Any,
) -> go.Figure:
    """Several lines on one plot, with a legend: ``ys`` a list of 1-D arrays or a ``(n_lines, n_points)`` array.

    ``x``: ``None`` (0, 1, …), one ``(n_points,)`` array for every line, or a list with one per line.
    ``labels``: legend names. ``hover``: one name per point. ``options``: the shared options (module docstring).
    """
    if isinstance(ys, (list, tuple)):
        series = [_array(y, f"ys[{i}]", (1,), "(n_points,)") for i, y in enumerate(ys)]
    else:
        series = list(_array(ys, "ys", (2,), "(n_lines, n_points) or a list of 1-D arrays"))
    if not series:
        raise ValueError("lines needs at least one line, got none")
    names = _labels(labels, len(series), "labels (one per line)") or [str(i) for i in range(len(series))]
    per_line = (
        isinstance(x, (list, tuple))
        and len(x) == len(series)
        and all(isinstance(item, (Tensor, np.ndarray, list, tuple)) for item in x)
    )
    if x is None:
        xs = [np.arange(len(s)) for s in series]
    elif per_line:
        xs = [_array(item, f"x[{i}]", (1,), "(n_points,)") for i, item in enumerate(x)]
    else:
        xs = [_array(x, "x", (1,), "(n_points,) or a list with one (n_points,) array per line")] * len(series)
    fig = go.Figure()
    for i, (xi, yi, name) in enumerate(zip(xs, series, names, strict=True)):
        if len(xi) != len(yi):
            raise ValueError(f"line {i} has {len(yi)} points but its x has {len(xi)} values")
        hovertext = _labels(hover, len(yi), "hover (one name per point)")
        fig.add_trace(go.Scatter(x=xi, y=yi, mode=mode, name=str(name), hovertext=hovertext))
    fig.update_layout(showlegend=len(series) > 1 or labels is not None)
    return _finish(fig, **options)


def line(y: ArrayLike, *, x: ArrayLike | None = None, labels: ArrayLike | None = None, **kwargs: Any) -> go.Figure:
    """One line from a ``(n_points,)`` array, or one per row of a ``(n_lines, n_points)`` array (:func:`lines`)."""
    arr = _array(y, "y", (1, 2), "(n_points,) or (n_lines, n_points)")
    return lines(arr[None] if arr.ndim == 1 else arr, x=x, labels=labels, **kwargs)


def _colour_marker(values: np.ndarray, color_label: str, colorscale: str) -> dict[str, Any]:
    low, high = _finite_range(values) or [0.0, 1.0]
    return {"colorscale": colorscale, "cmin": low, "cmax": high, "colorbar": {"title": {"text": color_label}}}


def scatter(
    x: ArrayLike,
    y: ArrayLike,
    *,
    color: str | ArrayLike | None = None,
    hover: ArrayLike | None = None,
    color_label: str = "",
    colorscale: str = "Viridis",
    **options: Any,
) -> go.Figure:
    """Scatter plot of ``(n_points,)`` ``x`` against ``(n_points,)`` ``y``. ``color``: one colour name, or
    ``(n_points,)`` numbers (a colour bar titled ``color_label``) or strings (one legend entry per category)."""
    xs, ys = _array(x, "x", (1,), "(n_points,)"), _array(y, "y", (1,), "(n_points,)")
    if len(xs) != len(ys):
        raise ValueError(f"x and y must have the same length, got {len(xs)} and {len(ys)}")
    hovertext = _labels(hover, len(xs), "hover (one name per point)")
    fig = go.Figure()
    if color is None or isinstance(color, str):
        marker = {"color": color} if color else {}
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=marker, hovertext=hovertext, showlegend=False))
        return _finish(fig, **options)
    values = _array(color, "color", (1,), "(n_points,)")
    if len(values) != len(xs):
        raise ValueError(f"color must have one value per point ({len(xs)}), got {len(values)}")
    if np.issubdtype(values.dtype, np.number):
        marker = {"color": values, **_colour_marker(values, color_label, colorscale)}
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=marker, hovertext=hovertext, showlegend=False))
        return _finish(fig, **options)
    for category in dict.fromkeys(values.tolist()):  # one trace (legend entry) per category, in order of appearance
        keep = values == category
        text = None if hovertext is None else [h for h, k in zip(hovertext, keep, strict=True) if k]
        fig.add_trace(go.Scatter(x=xs[keep], y=ys[keep], mode="markers", name=str(category), hovertext=text))
    fig.update_layout(legend_title_text=color_label)
    return _finish(fig, **options)


# ---- Animations (a slider with one step per frame, plus play / pause buttons) --------------------------------------


def _animated_figure(
    frame_traces: list[list[go.Scatter]],
    frame_labels: ArrayLike | None,
    name: str,
    xs: np.ndarray | None,
    ys: np.ndarray,
    options: Mapping[str, Any],
) -> go.Figure:
    """``frame_traces[0]`` with a slider over every frame, play / pause buttons and axes fixed over all frames."""
    labels = _labels(frame_labels, len(frame_traces), "frame_labels (one per frame)") or range(len(frame_traces))
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    play = {"frame": {"duration": 150, "redraw": True}, "fromcurrent": True, "transition": {"duration": 0}}
    steps = [{"method": "animate", "label": str(label), "args": [[str(i)], still]} for i, label in enumerate(labels)]
    buttons = [
        {"label": "play", "method": "animate", "args": [None, play]},
        {"label": "pause", "method": "animate", "args": [[None], still]},
    ]
    fig = go.Figure(
        data=frame_traces[0], frames=[go.Frame(data=traces, name=str(i)) for i, traces in enumerate(frame_traces)]
    )
    below = {"x": 0.1, "y": 0, "yanchor": "top"}
    slider = {**below, "steps": steps, "currentvalue": {"prefix": f"{name}="}, "len": 0.9, "xanchor": "left"}
    menu = {**below, "type": "buttons", "direction": "left", "buttons": buttons, "xanchor": "right"}
    fig.update_layout(
        sliders=[{**slider, "pad": {"t": 60, "b": 10}}], updatemenus=[{**menu, "pad": {"t": 70, "r": 10}}]
    )
    if (y_range := _finite_range(ys, options.get("log_y", False), pad=0.05)) is not None:
        fig.update_yaxes(range=y_range)
    if xs is not None and np.issubdtype(xs.dtype, np.number):
        if (x_range := _finite_range(xs, options.get("log_x", False), pad=0.05)) is not None:
            fig.update_xaxes(range=x_range)
    return fig


def animate_multi_lines(
    data: ArrayLike | Sequence[ArrayLike],
    *,
    labels: ArrayLike | None = None,
    x: ArrayLike | None = None,
    frame_labels: ArrayLike | None = None,
    animation_name: str = "frame",
    hover: ArrayLike | None = None,
    **options: Any,
) -> go.Figure:
    """Several lines changing together over frames: a ``(n_lines, n_frames, n_points)`` array or a list of
    ``(n_frames, n_points)`` arrays. ``labels``: one per line; ``x``: ``(n_points,)``; ``frame_labels``: one
    slider label per frame (e.g. epochs), shown as ``animation_name=label``."""
    if isinstance(data, (list, tuple)):
        arrays = [_array(d, f"data[{i}]", (2,), "(n_frames, n_points)") for i, d in enumerate(data)]
        if len({a.shape for a in arrays}) > 1:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"every line must have the same (n_frames, n_points) shape, got {shapes}")
        arr = np.stack(arrays) if arrays else np.zeros((0, 0, 0))
    else:
        arr = _array(data, "data", (3,), "(n_lines, n_frames, n_points) or a list of (n_frames, n_points) arrays")
    n_lines, n_frames, n_points = arr.shape
    if n_lines == 0 or n_frames == 0:
        raise ValueError(f"animate_multi_lines needs at least one line and one frame, got shape {arr.shape}")
    names = _labels(labels, n_lines, "labels (one per line)") or [str(i) for i in range(n_lines)]
    xs = np.arange(n_points) if x is None else _array(x, "x", (1,), "(n_points,)")
    if len(xs) != n_points:
        raise ValueError(f"x must have one value per point ({n_points}), got {len(xs)}")
    hovertext = _labels(hover, n_points, "hover (one name per point)")

    def trace(i: int, f: int) -> go.Scatter:
        line = {"color": _COLOURS[i % len(_COLOURS)]}
        return go.Scatter(x=xs, y=arr[i, f], mode="lines", name=str(names[i]), hovertext=hovertext, line=line)

    frame_traces = [[trace(i, f) for i in range(n_lines)] for f in range(n_frames)]
    fig = _animated_figure(frame_traces, frame_labels, animation_name, xs, arr, options)
    fig.update_layout(showlegend=n_lines > 1 or labels is not None)
    return _finish(fig, **options)


def animate_lines(data: ArrayLike, *, label: str | None = None, **kwargs: Any) -> go.Figure:
    """Row ``f`` of a ``(n_frames, n_points)`` array is the line at frame ``f``; ``label`` names it in a legend.
    Keywords as in :func:`animate_multi_lines`."""
    arr = _array(data, "data", (2,), "(n_frames, n_points)")
    return animate_multi_lines(arr[None], labels=None if label is None else [label], **kwargs)


def animate_scatter(
    x: ArrayLike,
    y: ArrayLike,
    *,
    color: ArrayLike | None = None,
    hover: ArrayLike | None = None,
    frame_labels: ArrayLike | None = None,
    animation_name: str = "frame",
    color_label: str = "",
    colorscale: str = "Viridis",
    **options: Any,
) -> go.Figure:
    """A scatter whose points move over frames: ``x``, ``y`` and (numeric) ``color`` are each
    ``(n_frames, n_points)``, or ``(n_points,)`` for every frame. ``frame_labels``: one slider label per frame."""
    inputs = {"x": x, "y": y} if color is None else {"x": x, "y": y, "color": color}
    expected = "(n_points,) (the same in every frame) or (n_frames, n_points)"
    arrays = {key: _array(value, key, (1, 2), expected) for key, value in inputs.items()}
    shapes = ", ".join(f"{key} {a.shape}" for key, a in arrays.items())
    if len({a.shape[-1] for a in arrays.values()}) > 1:
        raise ValueError(f"{', '.join(arrays)} must have the same number of points, got {shapes}")
    frame_counts = {a.shape[0] for a in arrays.values() if a.ndim == 2}
    if len(frame_counts) > 1:
        raise ValueError(f"inputs with several frames must have the same number of frames, got {shapes}")
    n_frames = frame_counts.pop() if frame_counts else 1
    arrays = {key: np.broadcast_to(a, (n_frames, a.shape[-1])) for key, a in arrays.items()}
    hovertext = _labels(hover, arrays["x"].shape[1], "hover (one name per point)")
    marker = {}
    if color is not None:
        if not np.issubdtype(arrays["color"].dtype, np.number):
            raise ValueError(f"animate_scatter's color must be numeric, got dtype {arrays['color'].dtype}")
        marker = _colour_marker(arrays["color"], color_label, colorscale)

    def trace(f: int) -> go.Scatter:
        colours = marker if color is None else {**marker, "color": arrays["color"][f]}
        return go.Scatter(x=arrays["x"][f], y=arrays["y"][f], mode="markers", hovertext=hovertext, marker=colours)

    frame_traces = [[trace(f)] for f in range(n_frames)]
    fig = _animated_figure(frame_traces, frame_labels, animation_name, arrays["x"], arrays["y"], options)
    return _finish(fig, **options)


# ---- Training phases -----------------------------------------------------------------------------------------------


def mark_phases(
    fig: go.Figure,
    phases: Sequence[tuple[str, Real, Real]] | Mapping[str, tuple[Real, Real]],
    *,
    shade: bool = True,
    boundaries: bool = True,
    opacity: Real = 0.12,
) -> go.Figure:
    """Mark training phases on ``fig`` (x-axis = epoch; modified and returned).

    ``phases``: ``(name, start_epoch, end_epoch)`` triples or a mapping ``name -> (start, end)`` (the paper's
    run: memorisation 0-1.4k, circuit formation 1.4k-9.4k, cleanup 9.4k-14k). ``shade``: a labelled band per
    phase; ``boundaries``: dashed lines at the phase boundaries.
    """
    spans = []
    for item in [(name, *span) for name, span in phases.items()] if isinstance(phases, Mapping) else phases:
        if len(item) != 3:
            raise ValueError(f"each phase must be (name, start_epoch, end_epoch), got {item!r}")
        name, start, end = item
        if not start < end:
            raise ValueError(f"phase {name!r} must start before it ends, got start={start}, end={end}")
        spans.append((str(name), float(start), float(end)))
    band = {"opacity": opacity, "line_width": 0, "layer": "below", "annotation_position": "top left"}
    for i, (name, start, end) in enumerate(spans):
        if shade:
            fig.add_vrect(x0=start, x1=end, fillcolor=_COLOURS[i % len(_COLOURS)], annotation_text=name, **band)
        elif boundaries:
            fig.add_annotation(x=start, y=1, yref="paper", text=name, showarrow=False, xanchor="left", yanchor="bottom")
    if boundaries:
        for epoch in sorted({e for _, start, end in spans for e in (start, end)}):
            fig.add_vline(x=epoch, line_dash="dash", line_color="gray", line_width=1)
    return fig
