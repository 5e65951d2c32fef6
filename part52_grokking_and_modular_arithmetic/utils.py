"""The course-facing facade: everything the notebooks import, under the names the public course uses.

Nothing here computes at import time and no model is loaded: ``p`` defaults to 113 where a default is needed,
and is otherwise inferred from the shapes of what you pass.

    from part52_grokking_and_modular_arithmetic import utils
    full_run_data = utils.load_full_run_data()          # local file, else the hub, else local training
    model = utils.load_model(full_run_data)              # the analysed checkpoint as a HookedTransformer
"""

from __future__ import annotations


from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from .checkpoints import load_run_data, validate_run_data
from .config import TrainConfig
from .data import make_all_data, make_labels, task_function, train_test_masks, train_test_split
from .fourier import (
    arrange_by_2d_freqs,
    fft1d,
    fft1d_given_dim,
    fft2d,
    fourier_2d_basis_term,
    fourier_basis,
    fourier_basis_names,
    get_trig_sum_directions,
    make_fourier_basis,
    project_onto_direction,
    project_onto_frequency,
    trig_sum_directions_matrix,
)
from .layout import is_paper_layout, load_in_state_dict, paper_to_transformer_lens, transformer_lens_to_paper
from .losses import bias_correct, cross_entropy_high_precision, score_logits
from .model import make_model, make_model_config, silence_transformer_lens_deprecation
from .provision import (
    ModelUnavailableError,
    analysed_checkpoint_index,
    default_run_path,
    download_full_run_data,
    load_full_run_data,
    run_config,
    run_data_source,
)

# The analysis library (Sections 1-2), Section 3's progress measures and the plotting helpers, under their
# public names (each module's __all__).
from .analysis import *  # noqa: F401,F403,E402
from .dynamics import *  # noqa: F401,F403,E402
from .plotting import *  # noqa: F401,F403,E402

DEFAULT_P = 113


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
    """Loss of last-position logits (``=`` logit dropped) on all / train / test pairs, as in the course.

    ``logits`` has one row per input pair in ``all_data`` order: shape ``(p*p, p)`` (or ``(p, p, p)``); p is
    read from the last dimension. The split is the paper's (``frac_train``, ``seed``) unless you pass others.
    """
    p = logits.shape[-1]
    n = logits.shape[0] * (logits.shape[1] if logits.ndim == 3 else 1)
    if n != p * p:
        raise ValueError(f"logits must hold one row per pair: ({p * p}, {p}) for p = {p}, got {tuple(logits.shape)}")
    labels = make_labels(make_all_data(p), p, fn, seed).to(logits.device)
    train_indices, _ = train_test_split(p, frac_train, seed)
    return score_logits(
        logits, labels, mode=mode, train_indices=train_indices, bias_correction=bias_correction, original_logits=original_logits
    )


test_logits.__test__ = False  # not a pytest test, despite its (course) name


def load_model(full_run_data: dict, index: int | None = None, device: str = "cpu") -> HookedTransformer:
    """The checkpoint ``index`` of a run (default: the analysed one, epoch 40,000 of the hub run or the last
    checkpoint of ours) as a ``HookedTransformer`` with the paper's architecture; p is read from the weights."""
    state_dicts = full_run_data["state_dicts"]
    if index is None:
        index = analysed_checkpoint_index(full_run_data)
    if not -len(state_dicts) <= index < len(state_dicts):
        raise IndexError(f"checkpoint index {index} out of range: the run has {len(state_dicts)} checkpoints")
    state_dict = state_dicts[index]
    w_e = state_dict["embed.W_E"]  # (d_model, d_vocab) in the paper layout, (d_vocab, d_model) in TransformerLens'
    p = int(w_e.shape[1] if is_paper_layout(state_dict) else w_e.shape[0]) - 1
    model = make_model(p, seed=None, device=device)
    return load_in_state_dict(model, state_dict)
