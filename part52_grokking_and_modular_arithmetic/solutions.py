"""Reference solutions of every coding exercise of the chapter (Sections 1-3), under the public names.

Each lives in one library module; ``fourier_2d_basis_term`` and ``get_trig_sum_directions`` take an extra ``p``
(default 113) where the chapter used a global. Importing this loads no model and touches no network. References:

* Section 1: :func:`analysis.key_activations_from_cache` (1.1, or :func:`analysis.get_key_activations` to run the
  model), :func:`analysis.get_effective_weights`, :func:`analysis.functional_form_logits` (1.3),
  :func:`fourier.make_fourier_basis`, :func:`fourier.fft1d`, :func:`fourier.fourier_2d_basis_term`,
  :func:`fourier.fft2d` (1.5).
* Section 2: :func:`analysis.mean_sq_fourier_coefficients` (2.2), :func:`analysis.fit_quadratic_terms` (2.3; the
  ReLU toy: :func:`analysis.relu_quadratic_fit`), :func:`analysis.find_neuron_freqs` (2.4),
  :func:`fourier.project_onto_direction`, :func:`fourier.project_onto_frequency` (2.5),
  :func:`fourier.get_trig_sum_directions` (2.8).
* Section 3: :func:`analysis.excl_loss` (3.2), :func:`analysis.fourier_embed` (3.3), :func:`analysis.embed_SVD` (3.4).

The grader (:mod:`.grading.graders`, ``tests.test_<exercise>`` in the notebooks) checks a student's version of each
against these, in the dtype of its inputs (float32 in the chapter).
"""

from __future__ import annotations

from .analysis.circuit import (
    embed_SVD,
    excl_loss,
    find_neuron_freqs,
    fit_quadratic_terms,
    fourier_embed,
    functional_form_logits,
    get_effective_weights,
    get_key_activations,
    key_activations_from_cache,
    mean_sq_fourier_coefficients,
    relu_quadratic_fit,
)
from .analysis.fourier import (
    fft1d,
    fft2d,
    fourier_2d_basis_term,
    get_trig_sum_directions,
    make_fourier_basis,
    project_onto_direction,
    project_onto_frequency,
)

__all__ = [
    # Section 1
    "key_activations_from_cache",
    "get_key_activations",
    "get_effective_weights",
    "functional_form_logits",
    "make_fourier_basis",
    "fft1d",
    "fourier_2d_basis_term",
    "fft2d",
    # Section 2
    "mean_sq_fourier_coefficients",
    "fit_quadratic_terms",
    "relu_quadratic_fit",
    "find_neuron_freqs",
    "project_onto_direction",
    "project_onto_frequency",
    "get_trig_sum_directions",
    # Section 3
    "excl_loss",
    "fourier_embed",
    "embed_SVD",
]
