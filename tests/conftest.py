"""Shared pytest setup: no hub access, quiet progress bars, TransformerLens' deprecation warning filtered.

jaxtyping + beartype run-time checks of the package's annotations are switched on in pyproject.toml
(``--jaxtyping-packages=part52_grokking_and_modular_arithmetic,beartype.beartype``).
"""

import os
import signal

# Tests never reach the Hugging Face hub (a miss costs ~23 s of retries); the fake-hub tests pass endpoint= explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

from part52_grokking_and_modular_arithmetic.runs.model import silence_transformer_lens_deprecation  # noqa: E402

silence_transformer_lens_deprecation()

# A runner started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT as *ignored*,
# and the package rightly leaves an ignored SIGINT alone. The Ctrl-C tests need the interactive default that a
# terminal, Jupyter or CI gives, so the test process restores Python's own handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items):
    """A notebook executed by nbmake is a slow test that needs the trained default model (``slow``, ``model``)."""
    for item in items:
        if type(item).__name__ == "NotebookItem":
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.model)


#: A run that is not the course's: a small modulus, another seed, split and lr; it stops early once its test loss is
#: below 1e-3 (epoch 740 of 2,000: memorised by epoch ~50, generalised by ~500; ~10 s on one thread).
SMALL_RUN = dict(
    p=31, seed=1, frac_train=0.8, lr=3e-3, epochs=2000, save_every=100, test_every=10, stop_at_test_loss=1e-3
)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The path of a finished run of :data:`SMALL_RUN`, trained once per session on one torch thread (a model this
    small trains fastest so, and a busy machine slows it least)."""
    import torch

    from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
    from part52_grokking_and_modular_arithmetic.training.train import train

    path = tmp_path_factory.mktemp("small_run") / "run_p31.pth"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            train(TrainConfig(**SMALL_RUN), out=path, progress=False)
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="session")
def p113_model():
    """A paper-initialised (untrained) p = 113 model, shared read-only across tests."""
    from part52_grokking_and_modular_arithmetic.runs.model import make_model

    return make_model(113, seed=0)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the duration of a test: tiny models train several times faster on one thread when
    the machine's two cores are shared, and results are compared within one setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    """A random paper-init p = 113 model whose unembedding is scaled up 30x, so logits and losses vary across
    inputs (and a grader's plausible mistakes show)."""
    import torch

    from part52_grokking_and_modular_arithmetic.runs.model import make_model

    m = make_model(113, seed=1)
    with torch.no_grad():
        m.W_U.mul_(30)
    return m


@pytest.fixture
def isolated_paths(tmp_path, monkeypatch):
    """Never read or write the real run file or Hugging Face cache."""
    from part52_grokking_and_modular_arithmetic.runs import provision

    monkeypatch.setenv(provision.ENV_RUN_PATH, str(tmp_path / "local" / "full_run_data.pth"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
