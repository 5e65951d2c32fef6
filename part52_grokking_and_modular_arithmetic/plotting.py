"""Plotly helpers for the chapter's figures.

Every helper **returns** a ``plotly.graph_objects.Figure`` and shows nothing unless asked
(``show=True``), so the caller decides what to display. Inputs may be torch tensors (any device,
any float dtype, with or without grad), numpy arrays or (nested) lists.

Shared keyword arguments (where they make sense):

* ``title``, ``xaxis``, ``yaxis``: figure title and axis titles.
* ``log_x`` / ``log_y``: logarithmic axes.
* ``hover``: one name per point (for lines/scatters), shown on hover.
* ``facet_col`` / ``facet_labels`` / ``facet_name``: split a heatmap into side-by-side panels along a dim.
* ``animation_frame`` / ``animation_labels`` / ``animation_name``: animate a heatmap along a dim.
* ``frame_labels`` / ``animation_name``: the slider labels of the animated line/scatter plots.
* ``show``: call ``fig.show()`` before returning (default ``False``).
* any other keyword goes to ``fig.update_layout`` (``width=``, ``height=``, ``template=`` ...).

Animations keep the axis ranges fixed over all frames, so the eye sees the data move, not the axes.

Heatmap conventions for the modular-arithmetic inputs: a batch index is ``x * p + y``; grids are shown
with **rows = x** (the first input, y-axis titled "x") and **columns = y** (x-axis titled "y").

Nothing here needs the internet: plotly.js is bundled with the ``plotly`` package (``fig.to_html`` embeds it
by default).
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

ArrayLike = Tensor | np.ndarray | Sequence[Any]
"""What every helper accepts as data: a tensor, a numpy array, or a (nested) list/tuple of numbers."""

_COLOURS = qualitative.Plotly
_DIVERGING_SCALE = "RdBu"


# ----------------------------------------------------------------------------------------------------
# Input conversion and checks
# ----------------------------------------------------------------------------------------------------


def to_numpy(data: ArrayLike | Real) -> np.ndarray:
    """Convert a tensor / array / (nested) list of numbers or tensors to a numpy array.

    Tensors are detached and moved to the CPU; half-precision tensors are upcast to float32
    (numpy has no bfloat16). Ragged lists raise a ``ValueError``.
    """
    if isinstance(data, Tensor):
        t = data.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, (list, tuple)) and any(isinstance(item, (Tensor, np.ndarray, list, tuple)) for item in data):
        parts = [to_numpy(item) for item in data]
        shapes = {part.shape for part in parts}
        if len(shapes) > 1:
            raise ValueError(f"cannot stack a ragged list into one array: its items have shapes {sorted(shapes)}")
        return np.stack(parts) if parts else np.asarray([])
    return np.asarray(data)


def _array(data: ArrayLike, name: str, ndims: tuple[int, ...], expected: str) -> np.ndarray:
    """``to_numpy(data)``, checked to have one of the ranks in ``ndims``; ``expected`` names the shapes."""
    arr = to_numpy(data)
    if arr.ndim not in ndims:
        raise ValueError(f"{name} must have shape {expected}, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    return arr


def _labels(values: ArrayLike | None, length: int, name: str) -> list[Any] | None:
    """A list of ``length`` labels (or None), with a clear error when the length is wrong."""
    if values is None:
        return None
    out = to_numpy(values).tolist() if not isinstance(values, (list, tuple)) else list(values)
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
    """Apply the shared figure options (see the module docstring): title, axis titles, log axes, any
    ``fig.update_layout`` keyword; show the figure if asked; return it."""
    fig.update_layout(title=title or None)
    if xaxis is not None:
        fig.update_xaxes(title_text=xaxis)
    if yaxis is not None:
        fig.update_yaxes(title_text=yaxis)
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    if layout:
        fig.update_layout(**layout)
    if show:
        fig.show()
    return fig


def _axis_range(values: np.ndarray, log: bool) -> list[float] | None:
    """A padded [low, high] covering every finite value (log10 units for a log axis), or None."""
    finite = values[np.isfinite(values)]
    if log:
        finite = np.log10(finite[finite > 0])
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    pad = 0.05 * (high - low) if high > low else 0.5
    return [low - pad, high + pad]


def _symmetric_limit(arr: np.ndarray, midpoint: float) -> float:
    """The largest finite distance from ``midpoint`` (1.0 if there is none), for a centred colour range."""
    finite = arr[np.isfinite(arr)]
    limit = float(np.abs(finite - midpoint).max()) if finite.size else 0.0
    return limit if limit > 0 else 1.0


# ----------------------------------------------------------------------------------------------------
# Heatmaps
# ----------------------------------------------------------------------------------------------------


def _check_split_dims(arr: np.ndarray, facet_col: int | None, animation_frame: int | None) -> None:
    """Check that ``arr`` is a 2-D grid plus exactly the dims named by ``facet_col`` / ``animation_frame``."""
    split = [d for d in (facet_col, animation_frame) if d is not None]
    for d in split:
        if not -arr.ndim <= d < arr.ndim:
            raise ValueError(f"facet_col/animation_frame dim {d} is out of range for shape {arr.shape}")
    if len({d % arr.ndim for d in split}) < len(split):
        raise ValueError(f"facet_col and animation_frame must be different dims, got {facet_col} and {animation_frame}")
    if arr.ndim != 2 + len(split):
        hint = "" if split else "; pass facet_col=<dim> or animation_frame=<dim> for the extra dims"
        raise ValueError(
            f"imshow expects a 2-D grid (rows, cols) plus one dim per facet_col/animation_frame "
            f"({2 + len(split)}-D here), got shape {arr.shape}{hint}"
        )


def _relabel_facets(fig: go.Figure, facet_labels: list[Any] | None, facet_name: str) -> None:
    """Replace plotly's "facet_col=i" panel titles with the given labels (or "facet_name=i")."""
    for annotation in fig.layout.annotations:
        match = re.fullmatch(r"facet_col=(\d+)", annotation.text or "")
        if match:
            i = int(match.group(1))
            annotation.text = str(facet_labels[i]) if facet_labels is not None else f"{facet_name}={i}"


def _relabel_slider(fig: go.Figure, labels: list[Any] | None, name: str) -> None:
    """Label the animation slider's steps with ``labels`` and its read-out with ``name``."""
    for slider in fig.layout.sliders:
        slider.currentvalue.prefix = f"{name}="
        if labels is not None:
            for step, label in zip(slider.steps, labels, strict=True):
                step.label = str(label)


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
    """Heatmap of a 2-D grid, optionally split into panels and/or animated along extra dims.

    Shapes: ``(rows, cols)``; ``(…, rows, cols, …)`` with exactly one extra dim per ``facet_col`` /
    ``animation_frame`` (each names the dim of ``data`` it splits along).

    ``x`` labels the columns and ``y`` the rows (one entry each). ``midpoint`` centres a diverging
    colour scale on that value (see :func:`imshow_div`). The colour range is shared by every panel
    and frame, so colours are comparable across them.
    """
    arr = to_numpy(data)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    _check_split_dims(arr, facet_col, animation_frame)
    split = {d % arr.ndim for d in (facet_col, animation_frame) if d is not None}
    rows_dim, cols_dim = [d for d in range(arr.ndim) if d not in split]
    x_labels = _labels(x, arr.shape[cols_dim], "x (one label per column)")
    y_labels = _labels(y, arr.shape[rows_dim], "y (one label per row)")
    facets = _labels(facet_labels, arr.shape[facet_col], "facet_labels") if facet_col is not None else None
    frames = (
        _labels(animation_labels, arr.shape[animation_frame], "animation_labels")
        if animation_frame is not None
        else None
    )

    if midpoint is not None:
        limit = _symmetric_limit(arr, midpoint)
        zmin = midpoint - limit if zmin is None else zmin
        zmax = midpoint + limit if zmax is None else zmax
        color_continuous_scale = color_continuous_scale or _DIVERGING_SCALE
    elif animation_frame is not None and arr.size and np.isfinite(arr).any():
        # one colour range for the whole animation (otherwise every frame rescales its colours)
        zmin = float(np.nanmin(arr[np.isfinite(arr)])) if zmin is None else zmin
        zmax = float(np.nanmax(arr[np.isfinite(arr)])) if zmax is None else zmax

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
    _relabel_facets(fig, facets, facet_name)
    _relabel_slider(fig, frames, animation_name)
    return _finish(fig, title=title, show=show, **layout)  # px already titled the axes (outer panels only)


def imshow_div(data: ArrayLike, *, midpoint: Real = 0.0, **kwargs: Any) -> go.Figure:
    """:func:`imshow` with a diverging red-white-blue scale centred at ``midpoint`` (0 by default).

    Use it for signed quantities (weights, Fourier coefficients): white is 0, red negative, blue positive.
    Accepts the same shapes and keywords as :func:`imshow`.
    """
    return imshow(data, midpoint=midpoint, **kwargs)


def _infer_p_from_inputs(shape: tuple[int, ...], p: int | None) -> tuple[int, bool]:
    """Return (p, is_flat) for data indexed by the p^2 input pairs: ``(p^2, …)`` (flat) or ``(p, p, …)``."""
    expected = "(p^2,), (p^2, n), (p, p) or (p, p, n): one entry per input pair (x, y), batch index x*p + y"
    if len(shape) == 0:
        raise ValueError(f"inputs_heatmap expects shape {expected}, got a scalar")
    if p is not None:
        if shape[0] == p * p:
            return p, True
        if len(shape) >= 2 and shape[:2] == (p, p):
            return p, False
        raise ValueError(f"inputs_heatmap expects shape {expected} with p = {p}, got {shape}")
    if len(shape) >= 2 and shape[0] == shape[1] and shape[0] > 1:
        return shape[0], False
    root = math.isqrt(shape[0])
    if root * root == shape[0] and root > 1:
        return root, True
    raise ValueError(f"inputs_heatmap expects shape {expected}, got {shape} (pass p= to disambiguate)")


def _grid_heatmap(grid: np.ndarray, facet_col: int | None, animation_frame: int | None, **kwargs: Any) -> go.Figure:
    """:func:`imshow` of a ``(rows, cols, ...)`` grid whose one extra dim becomes side-by-side panels unless it is
    animated (``animation_frame=2``)."""
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
    """Heatmap of a quantity defined on every input pair (x, y), rows = x, columns = y.

    Shapes: ``(p^2,)`` or ``(p, p)`` for one map; ``(p^2, n)`` or ``(p, p, n)`` for n maps (a head, a
    neuron…), shown as side-by-side panels unless ``animation_frame=2`` is passed (``facet_col=2`` is
    the default). ``(p^2, n, m)`` / ``(p, p, n, m)`` need both ``facet_col`` and ``animation_frame``
    (dims 2 and 3). A batch index is ``x * p + y``. ``p`` is inferred (pass it for odd shapes).
    Other keywords go to :func:`imshow` (``title``, ``facet_labels``, ``animation_name``, ``midpoint`` …).
    """
    arr = to_numpy(data)
    p, is_flat = _infer_p_from_inputs(arr.shape, p)
    grid = arr.reshape(p, p, *arr.shape[1:]) if is_flat else arr
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
    """Heatmap of a tensor in the 2D Fourier basis, both axes labelled "const", "cos 1", "sin 1", ….

    Shapes: ``(p, p)`` (e.g. the output of ``fft2d``: rows = x's component, cols = y's component) or
    ``(p, p, n)`` (panels by default, or ``animation_frame=2``), or ``(p, p, n, m)`` with both split
    dims given. ``p`` (odd) is read from the shape. Diverging colours centred at 0 by default
    (``midpoint=None`` for a sequential scale). Other keywords go to :func:`imshow`.
    """
    arr = to_numpy(data)
    if arr.ndim < 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 3 or arr.shape[0] % 2 == 0:
        raise ValueError(
            "imshow_fourier expects shape (p, p) or (p, p, n) with p odd (one row/column per Fourier "
            f"basis vector, e.g. the output of fft2d), got {arr.shape}"
        )
    names = fourier_basis_names(arr.shape[0])
    return _grid_heatmap(
        arr,
        facet_col,
        animation_frame,
        x=names,
        y=names,
        xaxis=xaxis,
        yaxis=yaxis,
        midpoint=midpoint,
        aspect=aspect,
        **kwargs,
    )


# ----------------------------------------------------------------------------------------------------
# Lines and scatters
# ----------------------------------------------------------------------------------------------------


def _is_per_line(x: Any, n_lines: int) -> bool:
    """True when ``x`` is a list of x-arrays (one per line) rather than one shared x-array."""
    if isinstance(x, (list, tuple)) and len(x) == n_lines and n_lines > 0:
        return all(isinstance(item, (Tensor, np.ndarray, list, tuple)) for item in x)
    return False


def _line_xs(x: ArrayLike | Sequence[ArrayLike] | None, lengths: list[int]) -> list[np.ndarray]:
    """One x-array per line: ``range(n)`` by default, a shared 1-D x, or one x per line."""
    if x is None:
        return [np.arange(n) for n in lengths]
    if _is_per_line(x, len(lengths)):
        xs = [_array(item, f"x[{i}]", (1,), "(n_points,)") for i, item in enumerate(x)]
    else:
        xs = [_array(x, "x", (1,), "(n_points,) or a list with one (n_points,) array per line")] * len(lengths)
    for i, (xi, n) in enumerate(zip(xs, lengths, strict=True)):
        if len(xi) != n:
            raise ValueError(f"line {i} has {n} points but its x has {len(xi)} values")
    return xs


def lines(
    ys: ArrayLike | Sequence[ArrayLike],
    *,
    x: ArrayLike | Sequence[ArrayLike] | None = None,
    labels: ArrayLike | None = None,
    hover: ArrayLike | None = None,
    mode: str = "lines",
    **options: Any,
) -> go.Figure:
    """Several lines on one plot (e.g. train and test loss against epoch), with a legend.

    Shapes: ``ys`` is a list of 1-D arrays (lengths may differ) or a 2-D ``(n_lines, n_points)`` array.
    ``x``: ``None`` (0, 1, 2, …), one ``(n_points,)`` array shared by every line, or a list with one x
    array per line (for curves sampled at different epochs). ``labels``: one legend name per line.
    ``hover``: one name per point (lines of equal length only). ``options``: the shared figure options
    (``title``, ``xaxis``, ``yaxis``, ``log_x``, ``log_y``, ``show``, layout keywords; see the module docstring).
    """
    if isinstance(ys, (list, tuple)):
        series = [_array(y, f"ys[{i}]", (1,), "(n_points,)") for i, y in enumerate(ys)]
    else:
        series = list(_array(ys, "ys", (2,), "(n_lines, n_points) or a list of 1-D arrays"))
    if not series:
        raise ValueError("lines needs at least one line, got none")
    names = _labels(labels, len(series), "labels (one per line)") or [str(i) for i in range(len(series))]
    xs = _line_xs(x, [len(s) for s in series])
    fig = go.Figure()
    for xi, yi, name in zip(xs, series, names, strict=True):
        hovertext = _labels(hover, len(yi), "hover (one name per point)")
        fig.add_trace(go.Scatter(x=xi, y=yi, mode=mode, name=str(name), hovertext=hovertext))
    fig.update_layout(showlegend=len(series) > 1 or labels is not None)
    return _finish(fig, **options)


def line(
    y: ArrayLike,
    *,
    x: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    **kwargs: Any,
) -> go.Figure:
    """One line from a ``(n_points,)`` array, or one line per row of a ``(n_lines, n_points)`` array.

    ``x``: ``(n_points,)`` x values (default 0, 1, …). ``labels``: legend names for the rows of a 2-D
    ``y``. Other keywords as in :func:`lines` (``hover``, ``log_y``, ``title``, ``xaxis``, ``yaxis`` …).
    """
    arr = _array(y, "y", (1, 2), "(n_points,) or (n_lines, n_points)")
    rows = arr[None] if arr.ndim == 1 else arr
    return lines(rows, x=x, labels=labels, **kwargs)


def _marker_colour(
    color: str | ArrayLike | None, n_points: int, color_label: str, colorscale: str
) -> tuple[dict[str, Any], list[Any] | None]:
    """Marker settings for ``color`` and, for categorical colours, the category of every point."""
    if color is None or isinstance(color, str):
        return ({"color": color} if color else {}), None
    values = _array(color, "color", (1,), "(n_points,)")
    if len(values) != n_points:
        raise ValueError(f"color must have one value per point ({n_points}), got {len(values)}")
    if np.issubdtype(values.dtype, np.number):
        return {"color": values, "colorscale": colorscale, "colorbar": {"title": {"text": color_label}}}, None
    return {}, values.tolist()


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
    """Scatter plot of ``(n_points,)`` ``x`` against ``(n_points,)`` ``y``.

    ``color``: a colour name for every point, numbers ``(n_points,)`` (continuous scale with a colour bar
    titled ``color_label``) or strings ``(n_points,)`` (one legend entry per category).
    ``hover``: one name per point. ``options``: the shared figure options (see :func:`lines`).
    """
    xs = _array(x, "x", (1,), "(n_points,)")
    ys = _array(y, "y", (1,), "(n_points,)")
    if len(xs) != len(ys):
        raise ValueError(f"x and y must have the same length, got {len(xs)} and {len(ys)}")
    hovertext = _labels(hover, len(xs), "hover (one name per point)")
    marker, categories = _marker_colour(color, len(xs), color_label, colorscale)
    fig = go.Figure()
    if categories is None:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=marker, hovertext=hovertext, showlegend=False))
    else:
        cats = np.asarray(categories)
        for category in dict.fromkeys(categories):
            keep = cats == category
            text = None if hovertext is None else [h for h, k in zip(hovertext, keep, strict=True) if k]
            fig.add_trace(go.Scatter(x=xs[keep], y=ys[keep], mode="markers", name=str(category), hovertext=text))
        fig.update_layout(legend_title_text=color_label)
    return _finish(fig, **options)


# ----------------------------------------------------------------------------------------------------
# Animations (a slider with one step per frame, plus play / pause buttons)
# ----------------------------------------------------------------------------------------------------


def _animated_figure(frame_traces: list[list[go.Scatter]], labels: list[Any], name: str) -> go.Figure:
    """A figure showing ``frame_traces[0]`` whose slider steps through every entry of ``frame_traces``."""
    frames = [go.Frame(data=traces, name=str(i)) for i, traces in enumerate(frame_traces)]
    step_args = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    steps = [
        {"method": "animate", "label": str(label), "args": [[str(i)], step_args]} for i, label in enumerate(labels)
    ]
    play = {"frame": {"duration": 150, "redraw": True}, "fromcurrent": True, "transition": {"duration": 0}}
    buttons = [
        {"label": "play", "method": "animate", "args": [None, play]},
        {"label": "pause", "method": "animate", "args": [[None], {**step_args, "frame": {"duration": 0}}]},
    ]
    fig = go.Figure(data=frame_traces[0], frames=frames)
    slider = {
        "steps": steps,
        "currentvalue": {"prefix": f"{name}="},
        "x": 0.1,
        "len": 0.9,
        "y": 0,
        "xanchor": "left",
        "yanchor": "top",
        "pad": {"t": 60, "b": 10},
    }
    menu = {
        "type": "buttons",
        "direction": "left",
        "buttons": buttons,
        "x": 0.1,
        "y": 0,
        "xanchor": "right",
        "yanchor": "top",
        "pad": {"t": 70, "r": 10},
    }
    fig.update_layout(sliders=[slider], updatemenus=[menu])
    return fig


def _frame_labels(frame_labels: ArrayLike | None, n_frames: int) -> list[Any]:
    return _labels(frame_labels, n_frames, "frame_labels (one per frame)") or list(range(n_frames))


def _fix_ranges(fig: go.Figure, xs: np.ndarray | None, ys: np.ndarray, options: Mapping[str, Any]) -> None:
    """Pin the axes to a range covering every frame's data (on log axes where ``options`` ask for them)."""
    log_x, log_y = bool(options.get("log_x", False)), bool(options.get("log_y", False))
    y_range = _axis_range(ys.astype(float), log_y)
    if y_range is not None:
        fig.update_yaxes(range=y_range)
    if xs is not None and np.issubdtype(xs.dtype, np.number):
        x_range = _axis_range(xs.astype(float), log_x)
        if x_range is not None:
            fig.update_xaxes(range=x_range)


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
    """Several lines that change together over frames (a slider steps through them).

    Shapes: a ``(n_lines, n_frames, n_points)`` array, or a list of ``(n_frames, n_points)`` arrays (one per
    line, all the same shape). ``labels``: legend names (one per line). ``x``: ``(n_points,)`` x values.
    ``frame_labels``: one slider label per frame (e.g. the checkpoint epochs), read out as
    ``animation_name=label``. ``hover``: one name per point. Every frame is used. ``options``: the shared
    figure options (see :func:`lines`); the axis ranges cover every frame.
    """
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
    frame_traces = [
        [
            go.Scatter(
                x=xs,
                y=arr[i, f],
                mode="lines",
                name=str(names[i]),
                hovertext=hovertext,
                line={"color": _COLOURS[i % len(_COLOURS)]},
            )
            for i in range(n_lines)
        ]
        for f in range(n_frames)
    ]
    fig = _animated_figure(frame_traces, _frame_labels(frame_labels, n_frames), animation_name)
    fig.update_layout(showlegend=n_lines > 1 or labels is not None)
    _fix_ranges(fig, xs, arr, options)
    return _finish(fig, **options)


def animate_lines(data: ArrayLike, *, label: str | None = None, **kwargs: Any) -> go.Figure:
    """One line per frame: row ``f`` of a ``(n_frames, n_points)`` array is the line shown at frame ``f``.

    E.g. the Fourier norms of W_E at every checkpoint, with ``frame_labels=epochs, animation_name="epoch"``.
    Keywords as in :func:`animate_multi_lines` (``x``, ``frame_labels``, ``animation_name``, ``hover``,
    ``log_y``, ``title`` …); ``label`` names the line in a legend.
    """
    arr = _array(data, "data", (2,), "(n_frames, n_points)")
    return animate_multi_lines(arr[None], labels=None if label is None else [label], **kwargs)


def _stack_frames(inputs: dict[str, ArrayLike]) -> dict[str, np.ndarray]:
    """Check and broadcast each input to a common ``(n_frames, n_points)``.

    Each input is ``(n_frames, n_points)`` or ``(n_points,)`` (then repeated in every frame).
    """
    arrays = {
        key: _array(value, key, (1, 2), "(n_points,) (the same in every frame) or (n_frames, n_points)")
        for key, value in inputs.items()
    }
    n_points = {a.shape[-1] for a in arrays.values()}
    if len(n_points) > 1:
        shapes = ", ".join(f"{key} {a.shape}" for key, a in arrays.items())
        raise ValueError(f"{', '.join(arrays)} must have the same number of points, got {shapes}")
    frame_counts = {a.shape[0] for a in arrays.values() if a.ndim == 2}
    if len(frame_counts) > 1:
        shapes = ", ".join(f"{key} {a.shape}" for key, a in arrays.items())
        raise ValueError(f"inputs with several frames must have the same number of frames, got {shapes}")
    n_frames = frame_counts.pop() if frame_counts else 1
    return {key: np.broadcast_to(a, (n_frames, a.shape[-1])) for key, a in arrays.items()}


def _colour_scale_marker(values: np.ndarray, color_label: str, colorscale: str) -> dict[str, Any]:
    """Marker settings for numeric colours with one fixed colour range covering every frame."""
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"animate_scatter's color must be numeric, got dtype {values.dtype}")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return {"colorscale": colorscale, "cmin": low, "cmax": high, "colorbar": {"title": {"text": color_label}}}


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
    """A scatter whose points move over frames; **every** frame and every point is plotted.

    Shapes: ``x``, ``y`` and (numeric) ``color`` are each ``(n_frames, n_points)``, or ``(n_points,)`` to keep
    them the same in every frame. ``hover``: one name per point. ``frame_labels``: one slider label per
    frame (e.g. epochs). The axis and colour ranges cover all frames. ``options``: the shared figure options
    (see :func:`lines`).
    """
    inputs = {"x": x, "y": y} if color is None else {"x": x, "y": y, "color": color}
    arrays = _stack_frames(inputs)
    n_frames, n_points = arrays["x"].shape
    hovertext = _labels(hover, n_points, "hover (one name per point)")
    marker = {} if color is None else _colour_scale_marker(arrays["color"], color_label, colorscale)

    def frame(f: int) -> list[go.Scatter]:
        colours = {} if color is None else {"color": arrays["color"][f]}
        trace = go.Scatter(
            x=arrays["x"][f], y=arrays["y"][f], mode="markers", hovertext=hovertext, marker={**marker, **colours}
        )
        return [trace]

    fig = _animated_figure([frame(f) for f in range(n_frames)], _frame_labels(frame_labels, n_frames), animation_name)
    _fix_ranges(fig, arrays["x"], arrays["y"], options)
    return _finish(fig, **options)


# ----------------------------------------------------------------------------------------------------
# Training phases
# ----------------------------------------------------------------------------------------------------


Phases = Sequence[tuple[str, Real, Real]] | Mapping[str, tuple[Real, Real]]


def _phase_list(phases: Phases) -> list[tuple[str, float, float]]:
    """``phases`` as checked ``(name, start, end)`` triples."""
    items = [(name, *span) for name, span in phases.items()] if isinstance(phases, Mapping) else list(phases)
    out = []
    for item in items:
        if len(item) != 3:
            raise ValueError(f"each phase must be (name, start_epoch, end_epoch), got {item!r}")
        name, start, end = item
        if not start < end:
            raise ValueError(f"phase {name!r} must start before it ends, got start={start}, end={end}")
        out.append((str(name), float(start), float(end)))
    return out


def mark_phases(
    fig: go.Figure,
    phases: Phases,
    *,
    shade: bool = True,
    boundaries: bool = True,
    opacity: Real = 0.12,
) -> go.Figure:
    """Mark training phases on a plot whose x-axis is the epoch (e.g. the loss curves). Modifies ``fig``.

    ``phases``: ``(name, start_epoch, end_epoch)`` triples, or a mapping ``name -> (start, end)`` (the paper's
    mainline run: memorisation 0-1.4k, circuit formation 1.4k-9.4k, cleanup 9.4k-14k epochs; other runs grok
    at other times). ``shade`` draws a labelled band per phase,
    ``boundaries`` a dashed vertical line at every phase boundary. Returns ``fig`` for chaining.
    (Shapes are placed in data units, so for a log x-axis pass epochs > 0.)
    """
    spans = _phase_list(phases)
    for i, (name, start, end) in enumerate(spans):
        colour = _COLOURS[i % len(_COLOURS)]
        if shade:
            fig.add_vrect(
                x0=start,
                x1=end,
                fillcolor=colour,
                opacity=opacity,
                line_width=0,
                layer="below",
                annotation_text=name,
                annotation_position="top left",
            )
        elif boundaries:
            fig.add_annotation(x=start, y=1, yref="paper", text=name, showarrow=False, xanchor="left", yanchor="bottom")
    if boundaries:
        for epoch in sorted({e for _, start, end in spans for e in (start, end)}):
            fig.add_vline(x=epoch, line_dash="dash", line_color="gray", line_width=1)
    return fig
