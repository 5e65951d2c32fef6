"""Reference solutions of every coding exercise of the chapter (Sections 1-3), under the public names.

Each fact lives in exactly one library module; this file only gathers the reference implementations under
the names and signatures students know (``fourier_2d_basis_term`` and ``get_trig_sum_directions`` take an
extra ``p`` with default 113 where the published chapter used a global). Importing it loads no model and
touches no network.

=====  ==============================================  ======================================================
Sec.   Exercise                                         Reference
=====  ==============================================  ======================================================
1.1    extract key activations                          :func:`analysis.key_activations_from_cache` (from a
                                                        cache), :func:`analysis.get_key_activations` (runs
                                                        the model)
1.3    effective weights                                :func:`analysis.get_effective_weights`
                                                        -> (W_logit, W_neur, W_attn)
1.3    ``functional_form_logits(W_neur, W_logit,        :func:`analysis.functional_form_logits`
       W_attn)``
1.5    ``make_fourier_basis(p)``                        :func:`fourier.make_fourier_basis`
1.5    ``fft1d(x)``                                     :func:`fourier.fft1d`
1.5    ``fourier_2d_basis_term(i, j)``                  :func:`fourier.fourier_2d_basis_term`
1.5    ``fft2d(tensor)``                                :func:`fourier.fft2d`
2.2    ``mean_sq_fourier_coefficients(neuron_acts_sq)`` :func:`analysis.mean_sq_fourier_coefficients`
2.3    ``fit_quadratic_terms(values, k)``               :func:`analysis.fit_quadratic_terms` (the ReLU toy:
                                                        :func:`analysis.relu_quadratic_fit`)
2.4    ``find_neuron_freqs(fourier_neuron_acts)``       :func:`analysis.find_neuron_freqs`
2.5    ``project_onto_direction(batch_vecs, v)``        :func:`fourier.project_onto_direction`
2.5    ``project_onto_frequency(batch_vecs, freq)``     :func:`fourier.project_onto_frequency`
2.8    ``get_trig_sum_directions(k)``                   :func:`fourier.get_trig_sum_directions`
3.2    ``excl_loss(model, key_freqs)``                  :func:`analysis.excl_loss`
3.3    ``fourier_embed(model)``                         :func:`analysis.fourier_embed`
3.4    ``embed_SVD(model)``                             :func:`analysis.embed_SVD`
=====  ==============================================  ======================================================

The student grader (:mod:`.grading.graders`, reached from the notebooks as ``tests.test_<exercise>``) checks a
student's version of each against these, in the dtype of its inputs (float32 in the chapter).
"""

from __future__ import annotations

from .analysis import (
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
from .fourier import (
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
