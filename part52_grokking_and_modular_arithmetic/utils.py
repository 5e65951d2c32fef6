"""The course-facing facade: the names the notebooks use, under the names the public course uses.

Everything else is imported from its own module (``analysis``, ``dynamics``, ``plotting``, ``fourier``,
``data``, ``run_data``, ...). Nothing here computes at import time and no model is loaded.

    from part52_grokking_and_modular_arithmetic import utils
    full_run_data = utils.load_full_run_data()   # the run object: local file, else the hub, else local training
    model = full_run_data.model()                 # the analysed checkpoint as a HookedTransformer
"""

from __future__ import annotations

from collections.abc import Mapping

from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from .analysis.circuit import (
    KEY_CLUSTER_MIN_FRACTION,
    analyse_neurons,
    embed_SVD,
    excl_loss,
    find_neuron_freqs,
    fourier_embed,
    get_effective_weights,
    key_frequencies,
    neuron_clusters,
    neuron_surgery_losses,
    relu_quadratic_fit,
    sum_difference_shares,
)
from .analysis.dynamics import cache_dir, compute_dynamics
from .analysis.fourier import (
    arrange_by_2d_freqs,
    fft1d,
    fft1d_given_dim,
    fft2d,
    fourier_2d_basis_term,
    get_trig_difference_directions,
    get_trig_sum_directions,
    make_fourier_basis,
    project_onto_direction,
    project_onto_frequency,
)
from .analysis.plotting import (
    animate_lines,
    animate_multi_lines,
    animate_scatter,
    imshow,
    imshow_div,
    imshow_fourier,
    inputs_heatmap,
    line,
    lines,
    mark_phases,
    scatter,
)
from .runs.data import make_all_data, make_labels, make_split, train_test_split
from .runs.layout import load_in_state_dict
from .runs.model import make_model_config, silence_transformer_lens_deprecation
from .runs.provision import default_run_path, load_full_run_data
from .runs.run_data import RunData, analysed_index_of, model_from_checkpoint
from .training.losses import bias_correct, cross_entropy_high_precision, score_logits

__all__ = [
    # the run
    "load_full_run_data",
    "default_run_path",
    "cache_dir",
    "load_model",
    "load_in_state_dict",
    "make_model_config",
    "silence_transformer_lens_deprecation",
    # data and losses
    "make_all_data",
    "make_labels",
    "train_test_split",
    "cross_entropy_high_precision",
    "bias_correct",
    "test_logits",
    # Fourier
    "make_fourier_basis",
    "fft1d",
    "fft1d_given_dim",
    "fft2d",
    "fourier_2d_basis_term",
    "arrange_by_2d_freqs",
    "project_onto_direction",
    "project_onto_frequency",
    "get_trig_sum_directions",
    "get_trig_difference_directions",
    # analysis (Sections 1-3)
    "get_effective_weights",
    "find_neuron_freqs",
    "neuron_clusters",
    "key_frequencies",
    "KEY_CLUSTER_MIN_FRACTION",
    "analyse_neurons",
    "neuron_surgery_losses",
    "relu_quadratic_fit",
    "sum_difference_shares",
    "excl_loss",
    "fourier_embed",
    "embed_SVD",
    "compute_dynamics",
    # plots
    "imshow",
    "imshow_div",
    "imshow_fourier",
    "inputs_heatmap",
    "line",
    "lines",
    "scatter",
    "animate_lines",
    "animate_multi_lines",
    "animate_scatter",
    "mark_phases",
    # the student's path
    "needs",
    "ExerciseNotDone",
]


def test_logits(
    logits: Float[Tensor, "batch vocab"] | Float[Tensor, "p p vocab"],
    bias_correction: bool = False,
    original_logits: Float[Tensor, "batch vocab"] | Float[Tensor, "p p vocab"] | None = None,
    mode: str = "all",
    *,
    fn: str = "add",
    frac_train: float = 0.3,
    seed: int = 0,
) -> float:
    """Loss of last-position logits (``=`` dropped; ``(p*p, p)`` in ``all_data`` order, or ``(p, p, p)``) on all /
    train / test pairs; labels and split of the recipe ``fn``, ``frac_train``, ``seed`` (:func:`~.runs.data.make_split`)."""
    p = logits.shape[-1]
    n = logits.shape[0] * (logits.shape[1] if logits.ndim == 3 else 1)
    if n != p * p:
        raise ValueError(f"logits must hold one row per pair: ({p * p}, {p}) for p = {p}, got {tuple(logits.shape)}")
    split = make_split(p, frac_train, seed, fn)
    return score_logits(
        logits,
        split.labels.to(logits.device),
        mode=mode,
        train_indices=split.train_indices,
        bias_correction=bias_correction,
        original_logits=original_logits,
    )


test_logits.__test__ = False  # not a pytest test, despite its (course) name


def load_model(full_run_data: RunData | Mapping, index: int | None = None, device: str = "cpu") -> HookedTransformer:
    """``full_run_data.model(index, device)``: checkpoint ``index`` (default: the analysed one) as a
    ``HookedTransformer``; also takes a plain run dict (``state_dicts`` and ``epochs``)."""
    if isinstance(full_run_data, RunData):
        return full_run_data.model(index, device)
    state_dicts = full_run_data["state_dicts"]
    if index is None:
        index = analysed_index_of(full_run_data["epochs"])
    return model_from_checkpoint(state_dicts, index, device)


class ExerciseNotDone(Exception):
    """Raised by :func:`needs`: an exercise this cell builds on is not done yet. Jupyter shows its one line
    (``_render_traceback_``) instead of a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def _not_done(value: object) -> bool:
    # A stub is `None` (a "compute these variables" exercise) or a function whose body still raises
    # NotImplementedError (the exercise template); a finished function never names it.
    if value is None:
        return True
    code = getattr(value, "__code__", None)
    return code is not None and "NotImplementedError" in code.co_names


_WRAPPERS = (__name__, "beartype", "jaxtyping", "typeguard")


def needs(*names: str) -> None:
    """Raise :class:`ExerciseNotDone` (one line: "finish `x` above first") unless the caller's (notebook's)
    global ``names`` are done: a stub (``None``, or a function that still raises ``NotImplementedError``) is not
    finished, a missing name's cell has not run. Nothing is called, so real errors surface where they happen."""
    import inspect

    frame = inspect.currentframe().f_back
    # the caller's globals, past any runtime type-checking wrapper (jaxtyping/beartype under pytest)
    while frame.f_back is not None and str(frame.f_globals.get("__name__", "")).startswith(_WRAPPERS):
        frame = frame.f_back
    namespace = frame.f_globals
    del frame
    unfinished = [name for name in names if name in namespace and _not_done(namespace[name])]
    undefined = [name for name in names if name not in namespace]
    parts = []
    if unfinished:
        parts.append("finish " + ", ".join(f"`{name}`" for name in unfinished) + " above first")
    if undefined:
        parts.append(
            ("" if unfinished else "first ")
            + "run the cells above that define "
            + ", ".join(f"`{name}`" for name in undefined)
            + " (after finishing their exercises)"
        )
    if parts:
        raise ExerciseNotDone("This cell needs earlier work: " + "; and ".join(parts) + ".")
