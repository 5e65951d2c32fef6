"""The course facade: the public names exist and its own helpers behave."""

import pytest
import torch

from part52_grokking_and_modular_arithmetic import utils
from part52_grokking_and_modular_arithmetic.runs import layout
from part52_grokking_and_modular_arithmetic.runs.model import make_model

COURSE_NAMES = [
    "make_fourier_basis",
    "fft1d",
    "fft2d",
    "fft1d_given_dim",
    "fourier_2d_basis_term",
    "arrange_by_2d_freqs",
    "project_onto_direction",
    "project_onto_frequency",
    "get_trig_sum_directions",
    "cross_entropy_high_precision",
    "test_logits",
    "make_all_data",
    "make_labels",
    "train_test_split",
    "make_model_config",
    "load_in_state_dict",
    "load_full_run_data",
    "find_neuron_freqs",
    "excl_loss",
    "fourier_embed",
    "embed_SVD",
    "get_effective_weights",
    "imshow",
    "imshow_div",
    "inputs_heatmap",
    "line",
    "lines",
    "scatter",
    "animate_lines",
    "animate_multi_lines",
    "animate_scatter",
    "imshow_fourier",
    "compute_dynamics",
]


@pytest.mark.parametrize("name", COURSE_NAMES)
def test_course_name_is_exported(name):
    assert callable(getattr(utils, name)) and name in utils.__all__


def test_facade_is_small_explicit_and_covers_the_notebook():
    import inspect
    import re
    from pathlib import Path

    assert len(utils.__all__) <= 50 and len(set(utils.__all__)) == len(utils.__all__)
    assert all(hasattr(utils, name) for name in utils.__all__)
    source = inspect.getsource(utils)
    assert "import *" not in source
    assert not hasattr(utils, "DEFAULT_P")
    notebook = Path(__file__).parents[1] / "notebooks" / "grokking_and_modular_arithmetic.py"
    used = set(re.findall(r"\butils\.([A-Za-z_]\w*)", notebook.read_text(encoding="utf-8")))
    assert used <= set(utils.__all__), (
        f"the notebook uses names the facade does not export: {used - set(utils.__all__)}"
    )


def test_test_logits_infers_p_and_scores_each_mode():
    p = 23
    logits = torch.zeros(p * p, p)
    logits[torch.arange(p * p), utils.make_labels(utils.make_all_data(p), p)] = 30.0  # right answer everywhere
    for mode in ("all", "train", "test"):
        assert utils.test_logits(logits, mode=mode) < 1e-10
    assert utils.test_logits(torch.zeros(p, p, p)) == pytest.approx(torch.log(torch.tensor(float(p))).item(), rel=1e-6)
    with pytest.raises(ValueError, match="one row per pair"):
        utils.test_logits(torch.zeros(p * p - 1, p))


def test_load_model_picks_the_analysed_checkpoint_in_either_layout():
    models = [make_model(23, seed=s) for s in range(3)]
    run = {
        "state_dicts": [layout.transformer_lens_to_paper(m.state_dict()) for m in models],
        "epochs": [0, 100, 200],
    }
    tokens = utils.make_all_data(23)
    torch.testing.assert_close(utils.load_model(run)(tokens), models[-1](tokens))
    torch.testing.assert_close(utils.load_model(run, index=1)(tokens), models[1](tokens))
    tl_run = {"state_dicts": [m.state_dict() for m in models], "epochs": [0, 100, 200]}
    torch.testing.assert_close(utils.load_model(tl_run, index=0)(tokens), models[0](tokens))
    with pytest.raises(IndexError, match="3 checkpoints"):
        utils.load_model(run, index=5)


def test_needs_names_unfinished_and_missing_work_in_one_line():
    def stub(x):
        raise NotImplementedError()

    def done(x):
        return x

    namespace = {"utils": utils, "stub": stub, "done": done, "values": None, "ready": 1}
    exec("utils.needs('done', 'ready')", namespace)  # finished work: nothing happens
    with pytest.raises(utils.ExerciseNotDone) as caught:
        exec("utils.needs('stub', 'values', 'done', 'never_defined')", namespace)
    message = str(caught.value)
    assert "\n" not in message
    assert "finish `stub`, `values` above first" in message and "`never_defined`" in message
    assert "`done`" not in message
    assert caught.value._render_traceback_() == [message]  # Jupyter shows the line alone, no traceback


def test_needs_does_not_call_or_hide_a_finished_function():
    calls = []

    def finished():
        calls.append(1)
        raise ValueError("a real bug in the student's code")

    namespace = {"utils": utils, "finished": finished}
    exec("utils.needs('finished')", namespace)
    assert calls == []
    with pytest.raises(ValueError, match="real bug"):
        exec("finished()", namespace)
