# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Grokking & Modular Arithmetic
#
# __COLAB_BADGE__
#
# A one-layer transformer is trained to compute $(x + y) \bmod p$ for a prime $p$ ($p = 113$ in the paper and
# in the course's published run) on 30% of all input pairs.
# For a long time it memorises: the train loss is tiny and the test loss is awful. Then, thousands of epochs
# later and with no change to the training set, the test loss collapses. This delayed generalisation is called
# **grokking**.
#
# In this notebook you will take the trained network apart and find the algorithm it learned — a neat use of
# discrete Fourier transforms and trigonometric identities — and then watch that algorithm form during
# training, which turns the surprise of grokking into a smooth, measurable process.
#
# **Contents**
#
# * **Setup** — the model, its training history, the data and a few helper variables.
# * **Section 1: Periodicity & the Fourier basis** — activations and effective weights are periodic in the
#   inputs; you build the Fourier basis of $\mathbb{Z}_p$ and look at the model through it.
# * **Section 2: Circuits & feature analysis** — key frequencies, neuron clusters, and surgical experiments
#   on the logits that show the model really computes $\cos(\omega(x + y - z))$.
# * **Section 3: Analysis during training** — progress measures that reveal three phases: memorisation,
#   circuit formation and cleanup.
# * **Bonus** — why this matters for alignment, follow-up projects, and an experiment you can run here: train
#   a second, smaller model and see that it picks different key frequencies.
#
# **Sources.** The science is from Neel Nanda, Lawrence Chan, Tom Lieberum, Jess Smith and Jacob Steinhardt,
# [*Progress measures for grokking via mechanistic interpretability*](https://arxiv.org/abs/2301.05217)
# (ICLR 2023). The exercises follow the structure of the ARENA chapter
# [*[1.5.2] Grokking and Modular Arithmetic*](https://arena-chapter1-transformer-interp.streamlit.app/)
# ([ARENA repository](https://github.com/callummcdougall/ARENA_3.0)), with the same exercise and function names,
# so you can read both side by side.
#
# **How to use this notebook.** Most exercises are functions with a docstring and a
# `raise NotImplementedError()` for you to replace; a few ask you to compute some variables, which start out as
# `None`. The cell after each exercise runs its grader (`tests.test_...`), which compares your answer with the
# reference solution and tells you what differs (or that you have not started yet). Questions have their answer folded away in
# an "Answer" box: think first, then open it. Every exercise starts with a line like
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 10 minutes
#
# (difficulty and importance out of five, and roughly how long it takes a first-time student), and has at
# least one folded hint: try without it first. A cell that needs an exercise you have not done yet says so in
# one line ("finish ... above first") instead of failing with a traceback. Every statement about "the model" is computed from the model you
# load and printed next to it (or checked in the summary at the end of Section 3), so it holds whether you use
# the course's published model or one you trained yourself; the few numbers of the published model quoted for
# comparison say so.

# %% [markdown]
# ## Setup
#
# **The problem.** The inputs are all $p^2$ pairs $(x, y)$ with $0 \le x, y < p$, written as the three-token
# sequence `[x, y, =]`; the label is $(x + y) \bmod p$. The paper's recipe, which the package's trainer
# follows:
#
# * a random 30% of the pairs are the training set, the other 70% the test set (the split is fixed by a seed);
# * **full batch**: every epoch is one optimiser step on all training pairs;
# * **AdamW** with learning rate $10^{-3}$, **weight decay 1** (large: it keeps pulling every weight towards
#   zero), betas $(0.9, 0.98)$, and a linear learning-rate warm-up over the first 10 steps;
# * cross-entropy at the last position, computed in float64;
# * many more epochs than it takes to fit the training set (the paper: 50,000, analysed at epoch 40,000).
#
# **What grokking looks like.** The train loss falls to almost zero within the first thousand or so epochs:
# the model has memorised its 30%. The test loss first *rises* — memorisation does not help on unseen pairs —
# and stays high for thousands of epochs; then, with nothing changed in the data, it falls to almost zero as
# well. The loss curve of the run you load is plotted at the end of this setup.
#
# The first cell installs the course package when it is missing (e.g. on Colab): the version this notebook was
# built with. When the package is already installed — locally, or in CI — it does nothing.

# %%
import importlib
import os
import subprocess
import sys

try:
    import part52_grokking_and_modular_arithmetic  # noqa: F401  (installed: nothing to do)
except ImportError:
    # Colab or a fresh environment: pip-install the course package and its dependencies. The default source is
    # the course repository at the release this notebook was built with (its git tag); set GROKKING_COURSE_PIP_SPEC to any pip requirement (a fork's git+https URL, a local
    # checkout, a wheel) to install from somewhere else, e.g. `%env GROKKING_COURSE_PIP_SPEC=/content/my_fork`.
    RELEASE_SPEC = "git+__COURSE_REPOSITORY_URL__@__COURSE_VERSION_TAG__"
    PIP_SPEC = os.environ.get("GROKKING_COURSE_PIP_SPEC", "").strip() or RELEASE_SPEC

    def pip_install(spec):
        print(f"Installing the course package: pip install {spec}  (a minute or two) ...", flush=True)
        return subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
            capture_output=True,
            text=True,
        )

    pip = pip_install(PIP_SPEC)
    if pip.returncode != 0 and PIP_SPEC == RELEASE_SPEC and "__COURSE_VERSION_TAG__" in (pip.stderr or ""):
        # the release tag is not published (yet): the repository's default branch instead, said out loud
        print("That release tag is not published; installing the repository's default branch instead.")
        PIP_SPEC = "git+__COURSE_REPOSITORY_URL__"
        pip = pip_install(PIP_SPEC)
    if pip.returncode != 0:
        pip_says = "\n".join((pip.stderr or pip.stdout).strip().splitlines()[-20:])
        raise RuntimeError(
            f"Could not install the course package: `pip install {PIP_SPEC}` failed (exit code {pip.returncode}).\n"
            f"The end of pip's message:\n{pip_says}\n\n"
            "What to do: check that this machine can reach the internet (on Colab: Runtime > Disconnect and delete "
            "runtime, then run again), or install from another source by setting GROKKING_COURSE_PIP_SPEC to a "
            "pip requirement (a git+https URL of the repository or a fork, a local checkout path or a .whl file), "
            "e.g. `%env GROKKING_COURSE_PIP_SPEC=/content/part52_grokking_and_modular_arithmetic`, and rerun this cell."
        ) from None
    importlib.invalidate_caches()
    import part52_grokking_and_modular_arithmetic  # noqa: F401,E402

    print("Installed.")

# %%
import functools
import math
import time
import warnings

import einops
import numpy as np
import plotly.io as pio
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from part52_grokking_and_modular_arithmetic import tests, utils
from part52_grokking_and_modular_arithmetic.analysis import circuit_checks

# TransformerLens 3.x warns at every model construction; that warning is not about your code.
utils.silence_transformer_lens_deprecation()
warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")

# Plotly: "plotly_mimetype" is drawn offline by JupyterLab, Notebook 7 and VS Code (with their bundled
# plotly.js) and is what the HTML report converts; Colab needs its own renderer.
IN_COLAB = "google.colab" in sys.modules
pio.renderers.default = "colab" if IN_COLAB else "plotly_mimetype"

# Everything in this notebook is analysis: no gradients needed. A GPU is used when there is one (e.g. on Colab);
# everything also runs on a CPU in a few minutes.
torch.set_grad_enabled(False)
device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"analysis device: {device}")

# %% [markdown]
# ### The model and its training history
#
# `utils.load_full_run_data()` returns the **checkpoint history** of a training run: the weights every 100
# epochs (`state_dicts`, `epochs`), the train loss at every epoch and the test loss at every test interval. It
# uses a cached copy when there is one, else downloads the course's published run from the Hugging Face hub,
# else trains the model locally (which takes a while on a CPU — the progress bar tells you how long).
#
# What it returns is a *run object*, checked once when it is loaded: besides the lists above (read like a dict,
# `full_run_data["epochs"]`) it knows the run's recipe (`.config`), its data set and train/test split
# (`.split`), where it came from (`.source`), which checkpoint the course analyses (`.analysed_index`) and
# how to turn any checkpoint into a model (`.model(i)`).
#
# The architecture (the config below) is the paper's: one layer, 4 attention heads of size 32, an MLP of 512
# ReLU neurons, no LayerNorm, learned positional embeddings, untied embedding and unembedding. The input is the
# sequence `[x, y, =]`, where `=` is token number `p`, and the answer is read from the logits at the last
# position.

# %%
t0 = time.perf_counter()
full_run_data = utils.load_full_run_data()
print(f"Loaded the checkpoint history in {time.perf_counter() - t0:.1f} s from {full_run_data.source}")

run_cfg = full_run_data.config  # the recipe of this run (the hub file stores none: the paper's is assumed)
p, fn, frac_train, seed = run_cfg.p, run_cfg.fn, run_cfg.frac_train, run_cfg.seed
assert fn == "add", f"this notebook studies modular addition; the loaded run learned {fn!r}"

checkpoint_epochs = full_run_data.epochs
# The course's published run is analysed at epoch 40,000 (it trained for 50,000); other runs at their last checkpoint.
analysed_index = full_run_data.analysed_index
ANALYSED_EPOCH = checkpoint_epochs[analysed_index]

model = full_run_data.model(analysed_index, device=device)  # a HookedTransformer
model.eval()
cfg = model.cfg

print(f"p = {p}, task: (x + y) mod p, train fraction {frac_train}, split seed {seed}")
print(
    f"{len(checkpoint_epochs)} checkpoints, epochs {checkpoint_epochs[0]} ... {checkpoint_epochs[-1]}; analysing epoch {ANALYSED_EPOCH}"
)
print(
    f"model: {cfg.n_layers} layer, d_model {cfg.d_model}, {cfg.n_heads} heads x {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}"
)

# %% [markdown]
# ### Data, logits and loss
#
# `all_data` holds all $p^2$ inputs in row-major order, so the input $(x, y)$ sits at batch index $x \cdot p + y$
# and any per-input quantity can be reshaped into a $(p, p)$ grid indexed `[x, y]`. We run the model on all of
# them once, keep the activation cache, and take the **last-position logits without the `=` logit** (the
# model never has to predict `=`): `original_logits` has shape $(p^2, p)$.
#
# Losses are computed with a float64 log-softmax (`utils.cross_entropy_high_precision`): a trained model's loss
# is around $10^{-7}$, below what float32 can resolve. `test_logits(logits, bias_correction, original_logits,
# mode)` scores any $(p^2, p)$ logits on `"all"`, `"train"` or `"test"` pairs of this run's split; with
# `bias_correction=True` it first adds back the batch mean of `original_logits - logits` (you will need that
# once you start deleting parts of the logits).

# %%
split = full_run_data.split  # this run's data set: inputs, labels and the paper's split for its fraction and seed
all_data = split.all_data.to(device)  # (p^2, 3): rows [x, y, p]
labels = split.labels.to(device)  # (p^2,): (x + y) mod p
train_indices = split.train_indices  # (n_train,): rows of all_data the model was trained on

original_logits, cache = model.run_with_cache(all_data)
original_logits = original_logits[:, -1, :-1]  # (p^2, p): last position, `=` logit dropped
original_loss = utils.cross_entropy_high_precision(original_logits, labels)

test_logits = functools.partial(utils.test_logits, fn=fn, frac_train=frac_train, seed=seed)

accuracy = (original_logits.argmax(-1) == labels).float().mean().item()
print(f"original loss on all {p * p} pairs: {original_loss.item():.3e}   accuracy: {accuracy:.2%}")
print(
    f"train loss: {test_logits(original_logits, mode='train'):.3e}   test loss: {test_logits(original_logits, mode='test'):.3e}"
)

# %% [markdown]
# Did this model grok? Its training history says: the plot shows the train and test loss on a log scale, and
# the printout the epochs at which each first falls below $10^{-2}$ (Section 3 returns to this curve and splits
# it into phases).

# %%
train_losses = np.asarray(full_run_data["train_losses"], dtype=float)  # one per epoch
test_losses = np.asarray(full_run_data["test_losses"], dtype=float)  # one per test interval
test_epochs = np.arange(len(test_losses)) * run_cfg.test_every  # test_losses[i] is at epoch i * test_every


def first_epoch_below(epochs: np.ndarray, losses: np.ndarray, threshold: float) -> int | None:
    """The first epoch at which ``losses`` falls below ``threshold`` (None if it never does)."""
    below = np.nonzero(losses < threshold)[0]
    return int(epochs[below[0]]) if len(below) else None


epoch_train_small = first_epoch_below(np.arange(len(train_losses)), train_losses, 1e-2)
epoch_test_small = first_epoch_below(test_epochs, test_losses, 1e-2)
print(f"train loss < 1e-2 from epoch {epoch_train_small}; test loss < 1e-2 from epoch {epoch_test_small}")
groks = epoch_train_small is not None and epoch_test_small is not None and epoch_test_small > 2 * epoch_train_small
print(
    "The model groks: it generalises long after it has fitted the training set."
    if groks
    else "Warning: this run does not show grokking (the test loss never fell far behind the train loss)."
)
utils.lines(
    [train_losses[np.minimum(test_epochs, len(train_losses) - 1)], test_losses],
    x=test_epochs,
    labels=["train", "test"],
    log_y=True,
    xaxis="epoch",
    yaxis="loss",
    title="Train and test loss of the loaded run",
).show()

# %% [markdown]
# ### Helper variables
#
# We name the weights as the rest of the notebook uses them: layer-0 slices, `W_E` without the `=` row
# (shape $(p, d_{model})$), `W_U` without the `=` column ($(d_{model}, p)$), and the residual stream at the
# `=` position before attention, `final_pos_resid_initial` $= W_E[=] + W_{pos}[2]$. TransformerLens' layout
# applies throughout: activations are multiplied from the left, `resid @ W`.

# %%
W_O = model.W_O[0]  # (n_heads, d_head, d_model)
W_K = model.W_K[0]  # (n_heads, d_model, d_head)
W_Q = model.W_Q[0]  # (n_heads, d_model, d_head)
W_V = model.W_V[0]  # (n_heads, d_model, d_head)
W_in = model.W_in[0]  # (d_model, d_mlp)
W_out = model.W_out[0]  # (d_mlp, d_model)
W_pos = model.W_pos  # (n_ctx, d_model)
W_E = model.W_E[:-1]  # (p, d_model): the `=` row dropped
final_pos_resid_initial = model.W_E[-1] + W_pos[2]  # (d_model,)
W_U = model.W_U[:, :-1]  # (d_model, p): the `=` column dropped

print(
    "W_E",
    tuple(W_E.shape),
    " W_U",
    tuple(W_U.shape),
    " W_Q",
    tuple(W_Q.shape),
    " W_O",
    tuple(W_O.shape),
    " W_in",
    tuple(W_in.shape),
)

# %% [markdown]
# # Section 1: Periodicity & the Fourier basis
#
# **Learning objectives**
#
# * Say which activations and paths of a one-layer transformer can carry information about $x$ and $y$ to the
#   answer, and derive the model's functional form from its architecture.
# * Compute effective weight matrices (`W_logit`, `W_neur`, `W_attn`) and measure what a simplification costs.
# * Build the Fourier basis of $\mathbb{Z}_p$ and the 2D basis of functions of $(x, y)$, and use them to see that
#   activations and weights are sparse: a few frequencies, constant, linear and product terms.
#
# ## 1.1 The activations that matter
#
# The model reads its answer at the last position, so the activations we care about are the ones at the `=`
# position: the attention pattern of the `=` query over the three key positions, and the MLP neurons.
#
# **Exercise — extract the key activations.** Using the cache, define
#
# * `attn_mat` $(p^2, n_{heads}, 3)$: the attention paid by the `=` query to each key position, per head;
# * `neuron_acts_post` $(p^2, d_{mlp})$: the MLP activations after the ReLU at the last position;
# * `neuron_acts_pre` $(p^2, d_{mlp})$: the same before the ReLU.
#
# All three are float32 tensors, one row per input in `all_data` order.
#
# > Difficulty 🔴⚪⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# `cache["pattern", 0]` has shape `(batch, head, query_pos, key_pos)`; `cache["post", 0]` and
# `cache["pre", 0]` have shape `(batch, pos, d_mlp)`. The `=` query is the last position: index `-1`.
# </details>

# %%
### BEGIN SOLUTION
attn_mat = cache["pattern", 0][:, :, -1, :]
neuron_acts_post = cache["post", 0][:, -1, :]
neuron_acts_pre = cache["pre", 0][:, -1, :]
### END SOLUTION

# %%
tests.test_cache_activations(attn_mat, neuron_acts_post, neuron_acts_pre, cache)

# %%
utils.needs("attn_mat", "neuron_acts_post", "neuron_acts_pre")
print("attn_mat", tuple(attn_mat.shape), " neuron_acts_post", tuple(neuron_acts_post.shape))

# %% [markdown]
# ## 1.2 Questions about the model
#
# Before computing anything else, think about what the model *has* to do. A few facts help:

# %%
utils.needs("attn_mat", "neuron_acts_post", "neuron_acts_pre")
mean_attn = attn_mat.mean(0)  # (n_heads, 3)
for h in range(cfg.n_heads):
    print(f"head {h}: average attention from = to [x, y, =] = {[round(v, 3) for v in mean_attn[h].tolist()]}")
pos_cos = torch.nn.functional.cosine_similarity(W_pos[0], W_pos[1], dim=0).item()
print(f"cosine similarity of the positional embeddings of x and y: {pos_cos:.3f}")

# %% [markdown]
# **Question.** Which inputs matter, and where can information about them flow?
#
# <details><summary>Answer</summary>
#
# Only $x$ and $y$ carry information; `=` is the same for every input. The answer is read at the last position,
# so information about $x$ and $y$ must reach that position — and in a one-layer model the only way there is
# attention from `=` to positions 0 and 1. After attention, the MLP at the last position and the unembedding
# turn it into logits. Everything at positions 0 and 1 after the attention layer is irrelevant to the output.
# </details>
#
# **Question.** What should the positional embeddings look like?
#
# <details><summary>Answer</summary>
#
# Addition is commutative, so there is no reason to treat $x$ and $y$ differently: we expect the embeddings of
# positions 0 and 1 to be close to each other (the cosine similarity printed above), and the attention to $x$
# and to $y$ to be symmetric on average.
# </details>
#
# **Question.** Which attention matters?
#
# <details><summary>Answer</summary>
#
# Attention from `=` to itself only moves the constant `=` embedding around, which carries no information
# about the inputs; the printed averages show it is close to zero anyway. What matters is how each head splits
# its attention between $x$ and $y$.
# </details>
#
# **Question.** What roles can the direct path (embedding → unembedding), the attention-only path and the MLP
# play?
#
# <details><summary>Answer</summary>
#
# The path from the `=` token's own embedding straight to the unembedding only sees `=`, so it adds the same
# vector to every input's logits. Everything that depends on the inputs arrives through attention: head $h$
# writes $\alpha_h v_h(x) + (1 - \alpha_h) v_h(y)$ (plus a little from `=`), and that reaches the logits both
# directly and through the MLP.
#
# Careful with a tempting shortcut: this is **not** a sum of a function of $x$ and a function of $y$. The
# weight $\alpha_h = \sigma(s_h(x) - s_h(y))$ depends on $x$ and $y$ *together*, so $\alpha_h(x, y)\, v_h(x)$
# contains products of $x$-waves and $y$-waves (expand the sigmoid around 0: $\sigma(u) \approx \tfrac12 +
# \tfrac u4$, and $\tfrac14 (s_h(x) - s_h(y))\, v_h(x)$ has the product $s_h(y) v_h(x)$). So attention *can*
# create the interaction terms that a function of $x + y$ needs. The MLP's ReLU is the other source. Which one does the real work is a measurable
# question; the next cell measures it for this model.
# </details>
#
# **Question.** What symmetries do you expect in the activations?
#
# <details><summary>Answer</summary>
#
# The answer depends only on $x + y$, and is symmetric under swapping $x$ and $y$. The logits should be (close
# to) functions of $x + y$ only; individual neurons need not be, but anything the model computes should be
# nearly symmetric in $x$ and $y$.
# </details>
#
# Two of these answers can be checked right away.
#
# **Symmetry.** Compare each neuron's activation $N(x, y)$ with $N(y, x)$: the fraction of a neuron's centred
# variance that is *antisymmetric* (changes sign when $x$ and $y$ swap) is 0 for a perfectly symmetric neuron
# and 1 for an antisymmetric one (`circuit_checks.antisymmetric_fraction`).
#
# **Where do the products of $x$ and $y$ come from?** Split any function of the inputs into a part
# $a(x) + b(y)$ and the rest, the **interaction** part (a product of $x$-waves and $y$-waves, not "$x$ minus
# $y$") (in the 2D Fourier basis of Section 1.5: the terms
# $F_i(x) F_j(y)$ with $i, j > 0$, such as $\cos\omega x \cos\omega y$). `circuit_checks.interaction_fraction`
# gives the share of the centred variance in the interaction part — for the attention paid to $x$, the
# neurons' pre-activations (what attention hands to the MLP) and their post-activations (after the ReLU).

# %%
utils.needs("neuron_acts_post", "neuron_acts_pre", "attn_mat")
grid_post = einops.rearrange(neuron_acts_post, "(x y) neuron -> x y neuron", x=p)
anti_post = circuit_checks.antisymmetric_fraction(neuron_acts_post)
anti_pre = circuit_checks.antisymmetric_fraction(neuron_acts_pre)
print(
    f"antisymmetric share of the neurons' variance: post-ReLU median {anti_post.median():.2%} (max {anti_post.max():.2%}); "
    f"pre-ReLU median {anti_pre.median():.2%}"
)
print(
    f"largest |N(x, y) - N(y, x)| over all neurons and inputs: {(grid_post - grid_post.transpose(0, 1)).abs().max():.3g} "
    f"(activations range up to {neuron_acts_post.max():.3g})"
)

interaction_attn = circuit_checks.interaction_fraction(attn_mat[:, :, 0])  # (n_heads,)
interaction_pre = circuit_checks.interaction_fraction(neuron_acts_pre)  # (d_mlp,)
interaction_post = circuit_checks.interaction_fraction(neuron_acts_post)


def pooled(fraction: Tensor, acts: Tensor) -> float:
    """Variance-weighted average of per-column fractions: the share of the total centred variance."""
    variance = acts.double().var(0)
    return ((fraction * variance).sum() / variance.sum()).item()


interaction_pre_all = pooled(interaction_pre, neuron_acts_pre)
interaction_post_all = pooled(interaction_post, neuron_acts_post)
print("share of the centred variance in interaction (product) terms F_i(x) F_j(y):")
print("  attention to x, per head:   " + ", ".join(f"{v:.1%}" for v in interaction_attn.tolist()))
print(f"  neuron pre-activations:     {interaction_pre_all:.1%} (all neurons together)")
print(f"  neuron post-activations:    {interaction_post_all:.1%}")
# Shares of different totals: the ReLU also changes the total variance, so compare the amounts as well.
interaction_amount_pre = interaction_pre_all * neuron_acts_pre.double().var(0).sum().item()
interaction_amount_post = interaction_post_all * neuron_acts_post.double().var(0).sum().item()
print(
    f"  in absolute terms (variance, summed over neurons): {interaction_amount_pre:.3g} before the ReLU, "
    f"{interaction_amount_post:.3g} after ({interaction_amount_post / max(interaction_amount_pre, 1e-30):.1f} x)"
)
symmetric_enough = anti_post.median().item() < 0.05

# %% [markdown]
# How to read this. The attention pattern itself is a function of $x$ and $y$ together, and part of its
# variance is interaction (the printed share per head). Through the values, some of that reaches the neurons:
# the pre-activations carry an interaction share that is small, but not zero, so "attention only adds up a
# function of $x$ and one of $y$" is a useful approximation, not a fact. After the ReLU the share is larger —
# both as a share and in absolute terms (the two printed ratios differ because the ReLU also changes the
# total variance): the MLP's nonlinearity makes most of the products, in the run you loaded if the numbers
# above say so. Section 2.3 shows why a ReLU makes products, and Section 3
# follows both shares over training.

# %% [markdown]
# ## 1.3 The functional form of the model
#
# Write $t_0 = W_E[x] + W_{pos}[0]$, $t_1 = W_E[y] + W_{pos}[1]$ and $t_2 = W_E[=] + W_{pos}[2]$ for the
# residual stream at the three positions before attention (this model has no LayerNorm and no attention
# biases). Head $h$ scores position $i$ with $s_{h,i} = t_2^T W_Q^h {W_K^h}^T t_i / \sqrt{d_{head}}$.
#
# **Exercise — derive the functional form (maths, no code).** Suppose the `=` query attends only to positions
# 0 and 1 (its attention to itself is small, as printed in 1.2). Leave out the positional embeddings of $x$
# and $y$, the `=` token's own residual stream $t_2$ in the values, the bias $b_{in}$, and every path that
# bypasses the MLP. Show that the logits are then
#
# $$\text{logits}(x, y) = \mathrm{ReLU}\Big(\sum_h \alpha_h W_{neur}[h, x] + (1 - \alpha_h) W_{neur}[h, y]\Big)^T W_{logit},
# \qquad \alpha_h = \sigma\big(W_{attn}[h, x] - W_{attn}[h, y]\big),$$
#
# and say what the three **effective weight** matrices $W_{logit}$, $W_{neur}$ and $W_{attn}$ are, in terms of
# $W_E, W_Q, W_K, W_V, W_O, W_{in}, W_{out}, W_U$ and $t_2$. Then list what each left-out term would add.
#
# > Difficulty 🔴🔴🔴⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 20 minutes
#
# <details><summary>Hint 1: the attention weights</summary>
#
# With only two positions to attend to, the softmax over $\{s_{h,0}, s_{h,1}\}$ is a sigmoid of one number.
# Which one?
# </details>
#
# <details><summary>Hint 2: the residual stream after attention</summary>
#
# Head $h$ writes $\big(\alpha_h t_0 + (1 - \alpha_h) t_1\big)^T W_V^h W_O^h$ to the last position. Follow
# that through $W_{in}$, the ReLU, $W_{out}$ and $W_U$, and group the matrices that do not depend on the input.
# </details>
#
# <details><summary>The derivation</summary>
#
# *Attention.* With two positions, $\alpha_h = \frac{e^{s_{h,0}}}{e^{s_{h,0}} + e^{s_{h,1}}} = \sigma(s_{h,0} - s_{h,1})$:
# a sigmoid of the *difference* of a score that depends only on $x$ and one that depends only on $y$ — a
# function of both together. Without the positional embeddings, $s_{h,0} = t_2^T W_Q^h {W_K^h}^T W_E[x] /
# \sqrt{d_{head}}$, so $s_{h,0} - s_{h,1} = W_{attn}[h, x] - W_{attn}[h, y]$ with
# $W_{attn} = t_2^T W_Q W_K^T W_E^T / \sqrt{d_{head}}$, shape $(n_{heads}, p)$: the score each head's `=` query
# gives each token.
#
# *Values and MLP.* The residual stream at the last position after attention is
# $r = t_2 + \sum_h \big(\alpha_h t_0 + (1 - \alpha_h) t_1\big)^T W_V^h W_O^h$, the neurons are
# $\mathrm{ReLU}(r^T W_{in} + b_{in})$, and the logits are
# $\text{neurons}^T W_{out} W_U + b_{out} W_U + r^T W_U$ — the last term is the **direct path** around the MLP.
# Dropping $t_2$, $b_{in}$ and the paths around the MLP, and writing $t_0 = W_E[x]$, $t_1 = W_E[y]$, the
# pre-activations are $\sum_h \alpha_h W_{neur}[h, x] + (1 - \alpha_h) W_{neur}[h, y]$ with
# $W_{neur} = W_E W_V W_O W_{in}$, shape $(n_{heads}, p, d_{mlp})$: what each token contributes to each neuron
# through each head. The logits are the ReLU of that times $W_{logit} = W_{out} W_U$, shape $(d_{mlp}, p)$: how
# each neuron pushes each output logit.
#
# *What the left-out terms add.* None is exactly zero; the table below measures each.
#
# 1. *The positional embeddings of $x$ and $y$.* In the values,
#    $\alpha_h W_{pos}[0] + (1 - \alpha_h) W_{pos}[1] = W_{pos}[1] + \alpha_h (W_{pos}[0] - W_{pos}[1])$: a
#    constant $W_{pos}[1] W_V^h W_O^h$ that reaches every input's pre-activations *inside* the ReLU (like
#    $t_2$ and $b_{in}$ below, it shifts where each neuron cuts off), plus a term that vanishes only when the
#    two positional embeddings are equal. In the scores, $s_{h,0} - s_{h,1}$ gains the constant
#    $t_2^T W_Q^h {W_K^h}^T (W_{pos}[0] - W_{pos}[1]) / \sqrt{d_{head}}$, zero when they are equal. So dropping
#    them is never exact: even for equal positional embeddings a constant stays inside the ReLU.
#    $W_{pos}[2]$ is kept: it is part of the query $t_2$.
# 2. *The `=` token's own residual stream $t_2$ (in the values) and the bias $b_{in}$.* Both add the same
#    vector to every input's pre-activations — and shift where each ReLU cuts off, so they are not harmless.
# 3. *The direct path $r^T W_U$ and $b_{out} W_U$*, which bypass the neurons. The part of it that comes from
#    $t_2$ and $b_{out}$ is the same for every input, but what attention writes there depends on $x$ and $y$.
# </details>
#
# In the code, `final_pos_resid_initial` is $t_2$.
#
# **Exercise — compute the effective weights** `W_logit` $(d_{mlp}, p)$, `W_neur` $(n_{heads}, p, d_{mlp})$
# and `W_attn` $(n_{heads}, p)$ (float32 tensors) from the helper variables, as derived above.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 10 minutes
#
# <details><summary>Hint</summary>
#
# Beware of `.T` on a 3-D tensor: it reverses *all* axes; and of `@` between a `(head, d)` matrix and a
# `(head, d, e)` stack, which pairs every head with every other head. `einops.einsum` with named axes avoids
# both traps.
# </details>

# %%
### BEGIN SOLUTION
W_logit = W_out @ W_U
W_neur = W_E @ W_V @ W_O @ W_in  # broadcasts over the head axis
W_attn = einops.einsum(
    final_pos_resid_initial @ W_Q,  # (head, d_head): the query of `=`, per head
    W_E @ W_K,  # (head, token, d_head): the key of every token, per head
    "head d_head, head token d_head -> head token",
) / math.sqrt(cfg.d_head)
### END SOLUTION

# %%
tests.test_effective_weights(W_logit, W_neur, W_attn, model)

# %%
utils.needs("W_logit", "W_neur", "W_attn")
print("W_logit", tuple(W_logit.shape), " W_neur", tuple(W_neur.shape), " W_attn", tuple(W_attn.shape))

# %% [markdown]
# **Exercise — `functional_form_logits(W_neur, W_logit, W_attn)`.** Compute the functional form above for all
# $p^2$ inputs: return logits of shape $(p^2, p)$ in `all_data` order (row $x \cdot p + y$). Steps: the
# attention weight $\alpha_h(x, y) = \sigma(W_{attn}[h, x] - W_{attn}[h, y])$ for every head and pair, shape
# $(n_{heads}, p, p)$; the neurons' pre-activations
# $\sum_h \alpha_h W_{neur}[h, x] + (1 - \alpha_h) W_{neur}[h, y]$, shape $(p, p, d_{mlp})$; ReLU; flatten the
# $(x, y)$ grid row-major; multiply by `W_logit`. No biases. Return a float tensor in the dtype of the inputs.
#
# > Difficulty 🔴🔴🔴⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 15 minutes
#
# <details><summary>Hint</summary>
#
# Broadcasting `W_attn[:, :, None] - W_attn[:, None, :]` gives the $(head, x, y)$ grid of score
# differences; `einops.einsum(alpha, W_neur, "head x y, head x neuron -> x y neuron")` sums the $x$ part over
# heads.
# </details>


# %%
def functional_form_logits(
    W_neur: Float[Tensor, "head p d_mlp"], W_logit: Float[Tensor, "d_mlp p"], W_attn: Float[Tensor, "head p"]
) -> Float[Tensor, "p_sq p"]:
    """Logits (p^2, p), in the inputs' dtype, of ReLU(sum_h a_h W_neur[h, x] + (1 - a_h) W_neur[h, y]) @ W_logit,
    with a_h = sigmoid(W_attn[h, x] - W_attn[h, y]); row x * p + y."""
    ### BEGIN SOLUTION
    alpha = torch.sigmoid(W_attn[:, :, None] - W_attn[:, None, :])  # (head, x, y)
    pre = einops.einsum(alpha, W_neur, "head x y, head x neuron -> x y neuron") + einops.einsum(
        1 - alpha, W_neur, "head x y, head y neuron -> x y neuron"
    )
    return einops.rearrange(torch.relu(pre), "x y neuron -> (x y) neuron") @ W_logit
    ### END SOLUTION


# %%
tests.test_functional_form_logits(functional_form_logits, model)

# %% [markdown]
# How good is the functional form? Compare its loss and accuracy with the model's, then add the left-out terms
# back one at a time (`circuit_checks.functional_form_variants`; each step keeps the previous ones). With every
# term back, the form *is* the model: a one-layer model without LayerNorm has nothing else. "Bias-corrected"
# adds back the batch mean of (model − form), the constant that terms like $t_2$ contribute outside the ReLU.

# %%
utils.needs("W_logit", "W_neur", "W_attn", "functional_form_logits")
form_logits = functional_form_logits(W_neur, W_logit, W_attn)
form_variants = circuit_checks.functional_form_variants(model)
print(
    f"your functional form vs the package's: max |difference| {(form_logits - form_variants['functional form']).abs().max():.2e}"
)


def loss_and_accuracy(logits: Tensor, bias_correction: bool = False) -> tuple[float, float]:
    if bias_correction:
        logits = utils.bias_correct(logits, original_logits)
    return test_logits(logits), (logits.argmax(-1) == labels).float().mean().item()


print(
    f"{'':<26}{'loss':>11}{'accuracy':>10}   {'bias-corrected:':<15}{'loss':>10}{'accuracy':>10}   max |logit - model's logit|"
)
for name, logits in [("the model", original_logits), *form_variants.items()]:
    (loss, acc), (loss_bc, acc_bc) = loss_and_accuracy(logits), loss_and_accuracy(logits, True)
    print(
        f"{name:<26}{loss:>11.3e}{acc:>10.2%}   {'':<15}{loss_bc:>10.3e}{acc_bc:>10.2%}   {(logits - original_logits).abs().max():.3g}"
    )
form_loss, form_accuracy = loss_and_accuracy(form_logits, True)
steps = list(form_variants)
jumps = {
    later: loss_and_accuracy(form_variants[later], True)[0] / loss_and_accuracy(form_variants[earlier], True)[0]
    for earlier, later in zip(steps, steps[1:])
}
biggest = min(jumps, key=jumps.get)
print(
    f"\nThe functional form alone (bias-corrected) gets {form_accuracy:.2%} of the answers right (the model: {accuracy:.2%})."
)
print(f"The step that lowers the loss most: '{biggest}' (loss x {jumps[biggest]:.2g}).")

# %% [markdown]
# **What the table means.** Accuracy asks whether the right answer still gets the highest logit; the loss asks
# how confidently. If the functional form's accuracy is close to the model's, the three effective weight
# matrices carry the algorithm, and the left-out terms only sharpen the answer. The loss is far more
# sensitive: a trained model's loss is around $10^{-7}$, so a small error in the logits multiplies it many
# times. Read down the table to see which left-out term matters (the printout names the step that helps
# most): the positional embeddings of $x$ and $y$ change the attention weights slightly; the `=` residual and
# $b_{in}$ shift where every neuron's ReLU cuts off, which changes *which* products the neurons make; the
# direct path adds what attention writes straight to the unembedding. The last row is the bookkeeping check: with
# every term back, the formula is the model, up to float rounding — nothing else is hidden in a one-layer model
# without LayerNorm. From here on we study the functional form's three matrices, keeping in mind what the
# table says they leave out.

# %% [markdown]
# ## 1.4 Everything is periodic
#
# Plot the attention paid to $x$ by each head, over the $(x, y)$ grid: striking waves.

# %%
utils.needs("attn_mat")
utils.inputs_heatmap(
    attn_mat[:, :, 0],
    facet_labels=[f"head {h}" for h in range(cfg.n_heads)],
    title="Attention from = to x, for every input (x, y)",
).show()

# %% [markdown]
# The neurons look periodic too — here the first five, after the ReLU:

# %%
utils.needs("neuron_acts_post")
utils.inputs_heatmap(
    neuron_acts_post[:, :5],
    facet_labels=[f"neuron {i}" for i in range(5)],
    title="Post-ReLU activations of the first 5 neurons",
).show()

# %% [markdown]
# And so are the effective weights, as functions of the input token: the attention scores `W_attn` per head,
# and a few neurons' input weights `W_neur` through head 0.

# %%
utils.needs("W_neur", "W_attn")
utils.line(
    W_attn,
    labels=[f"head {h}" for h in range(cfg.n_heads)],
    xaxis="token",
    yaxis="attention score",
    title="W_attn: the = query's score for each token",
).show()
utils.line(
    W_neur[0, :, :5].T,
    labels=[f"neuron {i}" for i in range(5)],
    xaxis="token",
    yaxis="contribution",
    title="W_neur (head 0): input weights of the first 5 neurons",
).show()

# %% [markdown]
# Waves everywhere. To see *which* waves, we need the right basis.
#
# ## 1.5 The Fourier basis of $\mathbb{Z}_p$
#
# A function on $\{0, 1, \dots, p-1\}$ is a vector in $\mathbb{R}^p$. Since $p$ is odd, the constant function
# and the pairs $\cos(2\pi k x / p)$, $\sin(2\pi k x / p)$ for $k = 1, \dots, (p-1)/2$ make exactly $p$
# functions, and they are mutually orthogonal: the **Fourier basis**.
#
# **Exercise — `make_fourier_basis(p)`.** Return a $(p, p)$ float tensor whose **rows** are the basis
# vectors, each normalised to unit norm, in the order: constant; $\cos 1, \sin 1$; $\cos 2, \sin 2$; …
# (so row $2k-1$ is $\cos(2\pi k x/p)$ and row $2k$ is $\sin(2\pi k x/p)$), and the list of names
# `["const", "cos 1", "sin 1", ..., f"cos {(p-1)//2}", f"sin {(p-1)//2}"]`. Return the basis as float32.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵🔵🔵 · about 10 minutes
#
# <details><summary>Hint</summary>
#
# Build the rows in float64 (`torch.arange(p, dtype=torch.float64)`), stack them, divide each row by its norm
# (`basis.norm(dim=1, keepdim=True)`), and convert with `.float()` at the end. The constant row is all ones
# before normalising.
# </details>


# %%
def make_fourier_basis(p: int) -> tuple[Float[Tensor, "p p"], list[str]]:
    """Return the (p, p) float32 orthonormal Fourier basis (rows = basis vectors) and the name of each row."""
    ### BEGIN SOLUTION
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    names = ["const"]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    basis = basis / basis.norm(dim=1, keepdim=True)
    return basis.float(), names
    ### END SOLUTION


# %%
tests.test_make_fourier_basis(make_fourier_basis, p)

# %%
utils.needs("make_fourier_basis")
fourier_basis, fourier_basis_names = make_fourier_basis(p)
fourier_basis = fourier_basis.to(device)  # on the GPU when there is one, like the activations
utils.line(
    fourier_basis[:7], labels=fourier_basis_names[:7], xaxis="x", title="The first 7 Fourier basis vectors"
).show()
utils.imshow_div(fourier_basis @ fourier_basis.T, title="fourier_basis @ fourier_basis.T is the identity").show()

# %% [markdown]
# **Exercise — `fft1d(x)`.** Express a tensor in the Fourier basis along its **last** dimension (any number of
# leading dimensions). Because the basis is orthonormal, the coefficients are just dot products with the rows:
# $\hat{v}_i = \sum_x F_{i x} v_x$. Return a tensor of the same shape and dtype as `x`.
#
# > Difficulty 🔴⚪⚪⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# Rows of the basis are the basis vectors, so the coefficients of a row vector `v` are `v @ basis.T`; this
# works for any number of leading dimensions. Make the basis with your `make_fourier_basis(x.shape[-1])` and
# move it to `x`'s device and dtype with `.to(x)`.
# </details>


# %%
def fft1d(x: Float[Tensor, "... p"]) -> Float[Tensor, "... p"]:
    """Coefficients of x in the Fourier basis along its last dimension (of size p); same shape and dtype as x."""
    ### BEGIN SOLUTION
    basis, _ = make_fourier_basis(x.shape[-1])
    return x @ basis.to(x).T
    ### END SOLUTION


# %%
tests.test_fft1d(fft1d, p)

# %% [markdown]
# A sum of three basis vectors: in the ordinary basis (one value per token $x$) it looks like an irregular
# wave; in the Fourier basis it has exactly three non-zero coefficients.

# %%
utils.needs("fourier_basis", "fft1d")
demo_components = [3, p // 4, 3 * p // 5]  # three basis vectors (any three distinct indices below p)
v = sum(fourier_basis[i] for i in demo_components)
demo_name = " + ".join(fourier_basis_names[i] for i in demo_components)
utils.line(v, xaxis="x", yaxis="value", title=f"{demo_name} in the ordinary basis (one value per token)").show()
utils.line(
    fft1d(v),
    hover=fourier_basis_names,
    xaxis="Fourier component",
    yaxis="coefficient",
    title=f"fft1d of {demo_name}",
).show()
print(
    "non-zero coefficients:", [fourier_basis_names[i] for i in torch.nonzero(fft1d(v).abs() > 1e-4).flatten().tolist()]
)

# %% [markdown]
# Functions of *two* inputs $(x, y)$ live in $\mathbb{R}^{p \times p}$, and the products of a basis vector in
# $x$ and one in $y$, $F_i(x) F_j(y)$, form an orthonormal basis of it: the **2D Fourier basis**.
#
# **Exercise — `fourier_2d_basis_term(i, j)`.** Return the $(p, p)$ grid of $F_i(x) F_j(y)$ indexed `[x, y]`
# (use the `fourier_basis` computed above), a float32 tensor.
#
# > Difficulty 🔴⚪⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# An outer product: a column times a row, `fourier_basis[i][:, None] * fourier_basis[j][None, :]`.
# </details>


# %%
def fourier_2d_basis_term(i: int, j: int) -> Float[Tensor, "p p"]:
    """The 2D basis function F_i(x) F_j(y) as a (p, p) float32 grid indexed [x, y]."""
    ### BEGIN SOLUTION
    return fourier_basis[i][:, None] * fourier_basis[j][None, :]
    ### END SOLUTION


# %%
tests.test_fourier_2d_basis_term(fourier_2d_basis_term, p)

# %%
utils.needs("fourier_basis", "fourier_2d_basis_term")
utils.inputs_heatmap(
    torch.stack([fourier_2d_basis_term(i, j) for i, j in [(1, 0), (3, 3), (4, 7)]], dim=-1),
    facet_labels=[f"{fourier_basis_names[i]} (x) * {fourier_basis_names[j]} (y)" for i, j in [(1, 0), (3, 3), (4, 7)]],
    title="Three 2D Fourier basis terms",
).show()

# %% [markdown]
# **Exercise — `fft2d(tensor)`.** Transform a tensor of shape $(p, p, \dots)$ — the first two axes being $x$
# and $y$ — into the 2D Fourier basis: $\hat{T}_{ij\dots} = \sum_{x,y} T_{xy\dots} F_{ix} F_{jy}$. Any number
# of trailing dimensions (e.g. one per neuron). Return a tensor of the same shape and dtype as `tensor`.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 10 minutes
#
# <details><summary>Hint</summary>
#
# `einops.einsum(tensor, basis, basis, "px py ..., i px, j py -> i j ...")`, with the basis from your
# `make_fourier_basis(tensor.shape[0])` moved to the tensor's device and dtype.
# </details>


# %%
def fft2d(tensor: Float[Tensor, "p p ..."]) -> Float[Tensor, "p p ..."]:
    """2D Fourier transform over the first two (x, y) dimensions; same shape and dtype as tensor."""
    ### BEGIN SOLUTION
    basis, _ = make_fourier_basis(tensor.shape[0])
    basis = basis.to(tensor)
    return einops.einsum(tensor, basis, basis, "px py ..., i px, j py -> i j ...")
    ### END SOLUTION


# %%
tests.test_fft2d(fft2d, p)

# %% [markdown]
# A sum of three 2D basis terms (with weights 1, 1/3 and 2), first as a function of $(x, y)$ — a pattern hard
# to read — and then in the 2D Fourier basis, where it is three cells.

# %%
utils.needs("fourier_2d_basis_term", "fft2d")
example_terms = [(4, 6), (14, p // 3), (p - 16, p - 13)]  # any three (i, j) below p
example_fn = sum(w * fourier_2d_basis_term(i, j) for w, (i, j) in zip([1, 1 / 3, 2], example_terms))
utils.inputs_heatmap(example_fn, title="A sum of three 2D basis terms, as a function of (x, y)").show()
utils.imshow_fourier(fft2d(example_fn), title="fft2d of the same sum: three cells").show()

# %% [markdown]
# ## 1.6 Activations in the Fourier basis
#
# **Aside: why may we change basis along the *batch* dimension?** Usually a change of basis acts on a
# model's feature dimensions (the residual stream, the neurons). Here we do something else: we take one
# activation, e.g. neuron 7, as a *function of the input* — a vector with one entry per input $(x, y)$, i.e.
# along the batch axis — and write that vector in another orthonormal basis of $\mathbb{R}^{p^2}$. That is
# legitimate because the batch axis is not an arbitrary list of examples: it is the complete table of all
# $p^2$ inputs, so every activation *is* a function on $\mathbb{Z}_p \times \mathbb{Z}_p$, and an orthonormal
# change of basis of that function space is a rotation that loses nothing (norms, variances and inner
# products stay the same, and `fft2d` can be undone). It also commutes with everything the model does along
# its *feature* dimensions: multiplying activations by `W_logit` acts on the neuron axis, so
# `fft2d(acts) @ W_logit == fft2d(acts @ W_logit)`. What it does not commute with is a nonlinearity applied
# per input (the ReLU), which is why we always transform activations *after* computing them, never inside the
# model. The same reasoning justifies the projections of Section 2 (onto directions along the batch axis).
#
# Now look at the attention to $x$ and at the neurons in the 2D Fourier basis. (The axes are labelled with
# the basis names: row = component in $x$, column = component in $y$.) We subtract each map's mean first:
# that only removes the constant term `[const, const]`, which would otherwise dwarf everything else. The maps
# are big — zoom into the top-left corner and along the first row and column.

# %%
utils.needs("attn_mat", "neuron_acts_post", "fft2d")
attn_to_x = einops.rearrange(attn_mat[:, :, 0], "(x y) head -> x y head", x=p)
utils.imshow_fourier(
    fft2d(attn_to_x - attn_to_x.mean((0, 1))),
    facet_labels=[f"head {h}" for h in range(cfg.n_heads)],
    facet_col_wrap=2,
    height=1000,
    title="Attention to x in the 2D Fourier basis (mean removed)",
).show()
neurons_grid = einops.rearrange(neuron_acts_post[:, :4], "(x y) neuron -> x y neuron", x=p)
utils.imshow_fourier(
    fft2d(neurons_grid - neurons_grid.mean((0, 1))),
    facet_labels=[f"neuron {i}" for i in range(4)],
    facet_col_wrap=2,
    height=1000,
    title="The first 4 neurons in the 2D Fourier basis (mean removed)",
).show()

# %% [markdown]
# **Exercise — spot the pattern.** Which cells light up? Zoom in on the figures.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# Sort the bright cells into three kinds: the first row and the first column (a constant in one input times a
# wave in the other), cells elsewhere (a wave in $x$ times a wave in $y$), and which frequencies they belong to.
# </details>
#
# <details><summary>Answer</summary>
#
# The pictures are **sparse**. The attention is mostly a constant plus a few terms that depend on only one of
# the inputs (the first row and first column: `const` in one input times a wave in the other) — mostly, not
# only: 1.2 measured the small share of interaction terms it also has. Each neuron has
# a constant term, *linear* terms $\cos(\omega_k x)$, $\sin(\omega_k x)$, $\cos(\omega_k y)$, $\sin(\omega_k y)$
# (first row and column) and *quadratic* terms $\cos(\omega_k x)\cos(\omega_k y)$, $\sin(\omega_k x)\sin(\omega_k y)$,
# … (a 2×2 block) — all of **one frequency** $k$ per neuron, with $\omega_k = 2\pi k / p$. The quadratic terms
# are what we need to compute functions of $x + y$: $\cos(\omega(x+y)) = \cos\omega x\cos\omega y - \sin\omega x\sin\omega y$.
# </details>

# %% [markdown]
# ## 1.7 The effective weights in the Fourier basis
#
# `utils.fft1d_given_dim(tensor, dim)` applies `fft1d` along any dimension. Transform `W_neur` along its token
# axis and `W_attn` along its only axis: the same few frequencies appear everywhere.

# %%
utils.needs("W_neur", "W_attn", "fourier_basis", "fft1d")
W_neur_fourier = utils.fft1d_given_dim(W_neur, dim=1)  # (n_heads, p, d_mlp): token axis in the Fourier basis
utils.imshow_div(
    W_neur_fourier[0].T[:64],
    x=fourier_basis_names,
    yaxis="neuron",
    xaxis="Fourier component",
    title="W_neur (head 0) in the Fourier basis, first 64 neurons",
).show()
utils.line(
    W_neur_fourier.pow(2).sum(-1).sqrt(),
    x=None,
    hover=fourier_basis_names,
    labels=[f"head {h}" for h in range(cfg.n_heads)],
    xaxis="Fourier component",
    yaxis="norm over neurons",
    title="Norm of each Fourier component of W_neur, per head",
).show()
utils.line(
    fft1d(W_attn),
    hover=fourier_basis_names,
    labels=[f"head {h}" for h in range(cfg.n_heads)],
    xaxis="Fourier component",
    title="W_attn in the Fourier basis",
).show()

# %% [markdown]
# ### Recap of Section 1
#
# * Only attention from `=` to $x$ and $y$ and the MLP at the last position matter; the model is (nearly)
#   symmetric in $x$ and $y$.
# * With the positional embeddings of $x$ and $y$, the `=` residual, the biases and the direct path left out,
#   the model reduces to three effective weight matrices, `W_logit`, `W_neur`, `W_attn`: the
#   **functional form** — and we measured what each left-out term is worth.
# * Attention weights depend on $x$ and $y$ together, so products of $x$ and $y$ can arise before the MLP;
#   the ReLU makes most of them (1.2).
# * Activations and effective weights are periodic in the inputs. In the Fourier basis of $\mathbb{Z}_p$ —
#   a legitimate, lossless change of basis along the batch axis — they are sparse: a few frequencies, and for
#   each neuron constant, linear and quadratic terms of one frequency.
#
# # Section 2: Circuits & feature analysis
#
# **Learning objectives**
#
# * Find the model's key frequencies from its embedding and its neurons, and group the neurons into
#   frequency clusters.
# * Understand how a ReLU of waves makes the product terms a function of $x + y$ needs, and how `W_logit` keeps
#   the $\cos/\sin(\omega(x+y))$ part of them and drops the $x - y$ part.
# * Test the story with surgery on the logits: projections, ablations, and keeping only a handful of
#   directions out of $p^2$.
#
# ## 2.1 The embedding and the key frequencies
#
# The embedding `W_E` maps each token to a vector in $\mathbb{R}^{d_{model}}$. Express its token axis in the
# Fourier basis, `fourier_basis @ W_E` $(p, d_{model})$, and take the norm of each row: the embedding only uses a
# handful of frequencies. (We sum each frequency's cos and sin, as the split between them is just a phase.)

# %%
utils.needs("fourier_basis")
fourier_embed_norms = (fourier_basis @ W_E).pow(2).sum(-1)  # (p,) squared norm of each component
utils.line(
    fourier_embed_norms.sqrt(),
    hover=fourier_basis_names,
    xaxis="Fourier component",
    yaxis="norm",
    title="Norm of each Fourier component of W_E",
).show()

embed_freq_norms = fourier_embed_norms[1::2] + fourier_embed_norms[2::2]  # (n_freqs,) frequency k at index k - 1
embed_freq_share = embed_freq_norms / embed_freq_norms.sum()
embed_freqs = [k + 1 for k in torch.nonzero(embed_freq_share > 0.02).flatten().tolist()]
print(f"frequencies carrying > 2% of the embedding's squared norm: {embed_freqs}")
print(
    f"together they carry {embed_freq_share[[k - 1 for k in embed_freqs]].sum():.1%} of it "
    f"({len(embed_freqs)} of {len(embed_freq_norms)} frequencies)"
)

# %% [markdown]
# These are candidates for the model's **key frequencies**. The embedding may keep a frequency that nothing
# downstream uses (for the course's published model the ARENA chapter shows an embedding that carries 14, 31,
# 35, 41, 42 and 52, while the paper's key frequencies are 14, 35, 41, 42 and 52: all but 31), so in section 2.4
# we let the neurons decide.
#
# Another view of the same sparsity: the singular value decomposition $W_E = U S V^T$. In a cleaned-up model
# (such as the course's published one) only about two singular values per frequency are large, and the
# corresponding left singular vectors (functions of the token) are each a cos/sin pair of one frequency. The
# printout shows how clean this is for the model you loaded: how much of each top singular vector lies in the
# frequencies above, and which frequency holds most of it.

# %%
utils.needs("fourier_basis")
U, S, Vh = torch.linalg.svd(W_E)
utils.line(S, xaxis="index", yaxis="singular value", title="Singular values of W_E").show()
n_big = 2 * len(embed_freqs) + 2
utils.imshow_div(
    fourier_basis @ U[:, :n_big],
    y=fourier_basis_names,
    xaxis="left singular vector",
    yaxis="Fourier component",
    title=f"The first {n_big} left singular vectors of W_E, in the Fourier basis",
).show()
embed_svd = circuit_checks.singular_vector_frequency_share(
    W_E.T, embed_freqs, n_top=max(2 * len(embed_freqs), 1)
)  # W_E.T: rows d_model, columns tokens
print(f"singular values of W_E: {[round(v, 2) for v in S[:n_big].tolist()]} ...")
print(
    f"the top {2 * len(embed_freqs)} left singular vectors: {embed_svd.key_share.min():.1%} or more of each in the cos/sin of {embed_freqs}; "
    f"each one's main frequency: {embed_svd.best_freq.tolist()}"
)

# %% [markdown]
# ## 2.2 Neurons: the mean squared Fourier coefficient
#
# Section 1.6 suggested each neuron is a combination of constant, linear and quadratic terms of one frequency.
# Check it for all neurons at once.
#
# **Exercise — `mean_sq_fourier_coefficients(neuron_acts_sq)`.** The input is the grid of neuron activations,
# shape $(p, p, d_{mlp})$ indexed `[x, y, neuron]`. Centre every neuron (subtract its mean over all $p^2$
# inputs), transform to the 2D Fourier basis with your `fft2d`, and return the mean over neurons of the
# squared coefficients: shape $(p, p)$. Why centre first? The mean of a neuron is its `[const, const]`
# coefficient, large for every neuron that fires; it would dwarf everything else. Return a tensor in the
# dtype of the input.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# `neuron_acts_sq.mean((0, 1), keepdim=True)` is each neuron's mean; after `fft2d`, square and average over
# the last axis.
# </details>


# %%
def mean_sq_fourier_coefficients(neuron_acts_sq: Float[Tensor, "p p d_mlp"]) -> Float[Tensor, "p p"]:
    """Mean over neurons of the squared 2D Fourier coefficients of each neuron's centred activation grid:
    a (p, p) tensor in the input's dtype."""
    ### BEGIN SOLUTION
    centred = neuron_acts_sq - neuron_acts_sq.mean((0, 1), keepdim=True)
    return fft2d(centred).pow(2).mean(-1)
    ### END SOLUTION


# %%
tests.test_mean_sq_fourier_coefficients(mean_sq_fourier_coefficients, p)

# %% [markdown]
# We plot the square root of that mean, which keeps the small terms visible next to the large ones.

# %%
utils.needs("neuron_acts_post", "fft2d", "mean_sq_fourier_coefficients")
mean_sq_coefficient = mean_sq_fourier_coefficients(grid_post)
utils.imshow_fourier(
    mean_sq_coefficient.sqrt(),
    midpoint=None,
    color_continuous_scale="Blues",
    height=650,
    title="Root mean squared 2D Fourier coefficient of the centred neurons",
).show()

# the same transform per neuron (not averaged), used for the clusters in 2.4
fourier_neuron_acts = fft2d(grid_post - grid_post.mean((0, 1), keepdim=True))  # (p, p, d_mlp)
embed_blocks = torch.tensor([i for k in embed_freqs for i in (2 * k - 1, 2 * k)], dtype=torch.long)
in_blocks = torch.zeros(p, p, dtype=torch.bool)
in_blocks[0, embed_blocks] = in_blocks[embed_blocks, 0] = True  # linear terms: first row and column
for k in embed_freqs:
    in_blocks[2 * k - 1 : 2 * k + 1, 2 * k - 1 : 2 * k + 1] = True  # the 2x2 quadratic block of frequency k
share_in_blocks = mean_sq_coefficient[in_blocks.to(mean_sq_coefficient.device)].sum() / mean_sq_coefficient.sum()
print(
    f"share of the mean squared coefficient in the linear terms and 2x2 quadratic blocks of {embed_freqs}: "
    f"{share_in_blocks:.1%} (these are {int(in_blocks.sum())} of {p * p} cells)"
)

# %% [markdown]
# Only the first row, the first column and a few 2×2 blocks on the diagonal light up — at the frequencies the
# embedding carries (the share printed above).
#
# ## 2.3 Why quadratic terms? A ReLU of cosines
#
# Suppose a neuron's pre-activation is a constant plus linear terms of one frequency, $c + \cos(\omega x) +
# \cos(\omega y)$. The ReLU cuts off the negative part, and what remains is no longer a sum of functions of
# $x$ and of $y$: a product term $\cos(\omega x)\cos(\omega y)$ appears. A small regression shows it.
#
# **Exercise — `fit_quadratic_terms(values, k)`.** Fit a $(p, p)$ grid `values` (indexed `[x, y]`) by least
# squares on the four unit-norm 2D basis terms const, $\cos_k(x)$, $\cos_k(y)$ and $\cos_k(x)\cos_k(y)$ —
# `fourier_2d_basis_term(0, 0)`, `(2k-1, 0)`, `(0, 2k-1)` and `(2k-1, 2k-1)` — and return the four coefficients
# (in that order, shape $(4,)$) and $r^2$, the fraction of the variance of `values` (around its mean) that
# the fit explains. The coefficients are a tensor in the dtype of `values`, $r^2$ a Python float.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵⚪⚪⚪ · about 10 minutes
#
# <details><summary>Hint</summary>
#
# The four terms are orthonormal vectors of $\mathbb{R}^{p^2}$, so the least-squares coefficients are plain
# dot products with the flattened grid (or use `torch.linalg.lstsq`). $r^2 = 1 - $ (sum of squared
# residuals) / (sum of squares of `values` minus its mean).
# </details>


# %%
def fit_quadratic_terms(values: Float[Tensor, "p p"], k: int) -> tuple[Float[Tensor, "4"], float]:
    """Least-squares coefficients (4,) (dtype of values) on const, cos_k(x), cos_k(y), cos_k(x) cos_k(y), and r^2."""
    ### BEGIN SOLUTION
    c = 2 * k - 1
    terms = torch.stack([fourier_2d_basis_term(i, j) for i, j in [(0, 0), (c, 0), (0, c), (c, c)]]).flatten(
        1
    )  # (4, p^2)
    terms = terms.to(values)
    target = values.flatten()
    coefficients = terms @ target  # orthonormal terms: the least-squares fit is the projection
    residual = target - coefficients @ terms
    r2 = 1 - residual.pow(2).sum() / (target - target.mean()).pow(2).sum()
    return coefficients, r2.item()
    ### END SOLUTION


# %%
tests.test_fit_quadratic_terms(fit_quadratic_terms, p)

# %% [markdown]
# Apply it to a toy neuron that uses no model weights at all: $\mathrm{ReLU}(0.5/\sqrt{p} + F_{\cos k}(x) +
# F_{\cos k}(y))$, with $F_{\cos k}$ the unit-norm cos-$k$ row of the basis, for one $k$ (below; for
# $p = 113$ it is the $k = 42$ of the published chapter). Without the product term (the package's
# `utils.relu_quadratic_fit` fits both ways), how much worse is the fit?


# %%
utils.needs("fourier_basis", "fit_quadratic_terms")


def relu_toy(k: int) -> Tensor:
    wave = fourier_basis[2 * k - 1]
    return torch.relu(0.5 / math.sqrt(p) + wave[:, None] + wave[None, :])


k_toy = 3 * (p - 1) // 8  # any frequency works (see below); 42 for p = 113
toy_coefficients, toy_r2 = fit_quadratic_terms(relu_toy(k_toy), k_toy)
toy_reference = utils.relu_quadratic_fit(k=k_toy, p=p)
print(
    f"k = {k_toy}: coefficients (const, cos x, cos y, cos x cos y) = ["
    + ", ".join(f"{c:.3f}" for c in toy_coefficients.tolist())
    + f"], r^2 = {toy_r2:.3f}"
)
print(
    f"without the cos x cos y term: r^2 = {toy_reference.r2_without_quadratic:.3f} "
    f"(package check of the full fit: r^2 = {toy_reference.r2:.3f})"
)
k_other = embed_freqs[0]
print(f"k = {k_other}: r^2 = {fit_quadratic_terms(relu_toy(k_other), k_other)[1]:.3f}")

# %% [markdown]
# The quadratic coefficient is large and the fit gets clearly better with it: a ReLU is a cheap way to multiply
# waves, and the product terms are exactly what the trig identities below need. (The numbers do not depend on
# $k$: as $p$ is prime, $x \mapsto kx \bmod p$ is a permutation of $\mathbb{Z}_p$, so the cos-$k$ wave takes the
# same values as the cos-1 wave, only in another order.) In 2.4 we apply the same fit to one of the model's own
# neurons.
#
# ## 2.4 Neuron clusters
#
# **Exercise — `find_neuron_freqs(fourier_neuron_acts)`.** For every neuron, find the frequency $k$ that best
# explains it and the fraction it explains. For frequency $k$, the neuron's "block" is the 3×3 set of 2D
# coefficients $\{\text{const}, \cos k, \sin k\} \times \{\text{const}, \cos k, \sin k\}$ (indices
# $[0, 2k-1, 2k]$ in each direction). The fraction explained is the block's sum of squares over the neuron's
# total sum of squares; the neuron's frequency is the $k$ with the largest fraction. The input is the
# *centred* `fourier_neuron_acts` $(p, p, d_{mlp})$ computed above. Consider every $k = 1, \dots, (p-1)/2$ —
# including the last one. (`utils.arrange_by_2d_freqs` gathers all the blocks: shape $(n_{freqs}, 3, 3, \dots)$.)
# Return the frequencies as an integer (int64) tensor and the fractions as a float tensor.
#
# > Difficulty 🔴🔴🔴⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 15 minutes
#
# <details><summary>Hint 1</summary>
#
# `utils.arrange_by_2d_freqs(fourier_neuron_acts)[k - 1]` is frequency $k$'s 3×3 block for every neuron.
# Sum its squares over the two 3×3 axes, divide by the neuron's total sum of squares.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `.max(dim=0)` over the frequency axis gives both the best fraction and its index; the index is $k - 1$.
# </details>


# %%
def find_neuron_freqs(
    fourier_neuron_acts: Float[Tensor, "p p d_mlp"],
) -> tuple[Int[Tensor, "d_mlp"], Float[Tensor, "d_mlp"]]:
    """Return (neuron_freqs (d_mlp,) int64 in 1..(p-1)/2, neuron_frac_explained (d_mlp,) float in [0, 1])."""
    ### BEGIN SOLUTION
    blocks = utils.arrange_by_2d_freqs(fourier_neuron_acts)  # (n_freqs, 3, 3, d_mlp)
    block_sq = blocks.pow(2).sum((1, 2))  # (n_freqs, d_mlp)
    total_sq = fourier_neuron_acts.pow(2).sum((0, 1))  # (d_mlp,)
    frac_by_freq = block_sq / total_sq
    neuron_frac_explained, best = frac_by_freq.max(dim=0)
    return best + 1, neuron_frac_explained
    ### END SOLUTION


# %%
tests.test_find_neuron_freqs(find_neuron_freqs, p)

# %% [markdown]
# Group the neurons: a neuron belongs to frequency $k$'s **cluster** when its block explains at least 85% of
# it; the others go to cluster $-1$. The **key frequencies** are the frequencies whose cluster holds at least
# 1% of the MLP's neurons (`utils.KEY_CLUSTER_MIN_FRACTION`; 6 of 512) — the rule `utils.key_frequencies`
# applies, printed below with the cluster sizes so you can see how far each frequency is from the cut.

# %%
utils.needs("neuron_acts_post", "mean_sq_fourier_coefficients", "find_neuron_freqs")
neuron_freqs, neuron_frac_explained = find_neuron_freqs(fourier_neuron_acts)
clusters = utils.neuron_clusters(neuron_freqs, neuron_frac_explained, threshold=0.85)  # {freq: neuron indices}
key_freqs = utils.key_frequencies(clusters=clusters, d_mlp=cfg.d_mlp)
if not key_freqs:  # a run that has not formed the circuit (yet): fall back to its biggest cluster or embedding wave
    by_size = sorted((k for k in clusters if k != -1), key=lambda k: -len(clusters[k]))
    key_freqs = by_size[:1] or [int(embed_freq_norms.argmax()) + 1]
    print(
        f"Note: no frequency has a cluster of >= {utils.KEY_CLUSTER_MIN_FRACTION:.0%} of the neurons in this run; "
        f"the rest of the notebook uses {key_freqs} (its biggest cluster, else the embedding's strongest frequency)."
    )
    clusters.setdefault(key_freqs[0], torch.zeros(0, dtype=torch.long, device=device))
n_explained = sum(len(idx) for k, idx in clusters.items() if k != -1)

print(
    f"key frequencies (clusters of >= {utils.KEY_CLUSTER_MIN_FRACTION:.0%} of the {cfg.d_mlp} neurons, "
    f"i.e. >= {math.ceil(utils.KEY_CLUSTER_MIN_FRACTION * cfg.d_mlp)}): {key_freqs}"
)
print(
    f"frequencies the embedding carries: {embed_freqs}"
    + (
        f" (not used by the neurons: {sorted(set(embed_freqs) - set(key_freqs))})"
        if set(embed_freqs) - set(key_freqs)
        else ""
    )
)
print("cluster sizes:", {k: len(idx) for k, idx in clusters.items()})
print(f"neurons explained >= 85% by one frequency: {n_explained} of {cfg.d_mlp} = {n_explained / cfg.d_mlp:.1%}")

# %% [markdown]
# Why would a neuron not belong to any frequency (cluster $-1$)? One possible reason: a neuron that fires on
# almost every input has a ReLU that is nearly the identity, so it stays close to *linear* in its
# pre-activation, which can mix several frequencies and carries few products of $x$ and $y$ (1.2). The scatter
# plot shows each neuron's frequency against the fraction explained, coloured by the fraction of inputs on which
# it fires; the printout below it compares how often the two groups fire — if cluster $-1$ does not fire
# clearly more often, this reason does not explain it in your run (its neurons may instead mix frequencies
# while they are still being cleaned up).

# %%
utils.needs("find_neuron_freqs", "key_freqs")
fire_frac = (neuron_acts_post > 0).float().mean(0)
utils.scatter(
    neuron_freqs,
    neuron_frac_explained,
    color=fire_frac,
    color_label="fires on",
    hover=[f"neuron {i}" for i in range(cfg.d_mlp)],
    xaxis="neuron frequency",
    yaxis="fraction explained",
    title="Each neuron's best frequency and how much of it that frequency explains",
).show()
unclustered = clusters.get(-1, torch.zeros(0, dtype=torch.long, device=device))
print(
    f"cluster -1: {len(unclustered)} neurons, firing on {fire_frac[unclustered].mean():.1%} of inputs on average "
    f"(clustered neurons: {fire_frac[neuron_frac_explained >= 0.85].mean():.1%})"
)

# %% [markdown]
# **Every cluster in the 2D Fourier basis.** For each cluster, the root mean squared 2D Fourier coefficient of
# its neurons (centred), as in 2.2 but per cluster. Each key frequency's panel lights up only in that
# frequency's linear terms (first row and column) and its 2×2 quadratic block; cluster $-1$ (if present)
# spreads over several frequencies' linear terms. The printout gives, per cluster, the share inside its own
# 3×3 block.

# %%
utils.needs("find_neuron_freqs", "key_freqs")
cluster_names = [k for k in clusters]
cluster_maps = torch.stack(
    [fourier_neuron_acts[:, :, clusters[k]].pow(2).mean(-1) for k in cluster_names], dim=-1
).sqrt()
cluster_maps = cluster_maps / cluster_maps.amax((0, 1), keepdim=True)
utils.imshow_fourier(
    cluster_maps,
    midpoint=None,
    color_continuous_scale="Blues",
    facet_col_wrap=3,
    height=350 * math.ceil(len(cluster_names) / 3),
    facet_labels=[f"cluster {k} ({len(clusters[k])} neurons)" for k in cluster_names],
    title="Root mean squared 2D Fourier coefficients of each cluster's neurons (each panel scaled to max 1)",
).show()
for k in key_freqs:
    idx = torch.tensor([0, 2 * k - 1, 2 * k], device=device)  # const, cos k, sin k
    sq = fourier_neuron_acts[:, :, clusters[k]].pow(2).sum(-1)
    print(
        f"cluster {k:>2}: {sq[idx[:, None], idx[None, :]].sum() / sq.sum():.1%} of its squared coefficients in its own 3x3 block"
    )

# %% [markdown]
# **Back to the fit of 2.3, on a real neuron.** Take the largest cluster and, among its neurons, the one whose
# linear term is closest to a pure cosine (not a sine: the four terms of `fit_quadratic_terms` are all
# cosines). Fit its post-activation grid with its own frequency, and compare the $r^2$ with the toy's.

# %%
utils.needs("fit_quadratic_terms", "toy_r2", "key_freqs")
big_freq = max(key_freqs, key=lambda k: len(clusters[k]))
big_cluster = clusters[big_freq]
cos_x = fourier_neuron_acts[2 * big_freq - 1, 0, big_cluster].pow(2)
sin_x = fourier_neuron_acts[2 * big_freq, 0, big_cluster].pow(2)
cosine_share = cos_x / (cos_x + sin_x).clamp_min(1e-30)
neuron = int(big_cluster[cosine_share.argmax()])
neuron_coefficients, neuron_r2 = fit_quadratic_terms(grid_post[:, :, neuron], big_freq)
print(
    f"neuron {neuron} (cluster {big_freq}, {cosine_share.max():.0%} of its x-linear term in cos): coefficients "
    + "["
    + ", ".join(f"{c:.3f}" for c in neuron_coefficients.tolist())
    + f"], r^2 = {neuron_r2:.3f} (toy: {toy_r2:.3f})"
)
quad_over_linear = (neuron_coefficients[3] / neuron_coefficients[1]).item()
print(
    f"its quadratic term relative to its linear cos x term: {quad_over_linear:.2f} "
    f"(toy: {toy_coefficients[3] / toy_coefficients[1]:.2f})"
    + (
        "; negative: this neuron's wave is -cos rather than +cos (half a turn out of phase), which flips the sign of"
        " its linear terms but not of its product term, so compare sizes: "
        f"|ratio| {abs(quad_over_linear):.2f}"
        if quad_over_linear < 0
        else ""
    )
)

# %% [markdown]
# **Before and after the ReLU, neuron by neuron.** For every neuron, the share of its centred variance in
# interaction (product) terms before the ReLU (x-axis: what attention made) and after it (y-axis), coloured
# by cluster. Points above the diagonal are neurons whose ReLU made products.

# %%
utils.needs("key_freqs")
cluster_of = torch.full((cfg.d_mlp,), -1, dtype=torch.long, device=device)
for k, idx in clusters.items():
    cluster_of[idx] = k
utils.scatter(
    interaction_pre,
    interaction_post,
    color=cluster_of,
    color_label="cluster",
    hover=[f"neuron {i} (cluster {c})" for i, c in enumerate(cluster_of.tolist())],
    xaxis="interaction share before the ReLU",
    yaxis="interaction share after the ReLU",
    title="Products of x and y in each neuron, before and after the ReLU",
).show()
clustered = cluster_of != -1
above = interaction_post > interaction_pre
print(
    f"clustered neurons: median interaction share {interaction_pre[clustered].median():.1%} before the ReLU, "
    f"{interaction_post[clustered].median():.1%} after; {int((above & clustered).sum())} of {int(clustered.sum())} "
    f"gain products in the ReLU"
)

# %% [markdown]
# ## 2.5 Projections: how much of the model is the Fourier story?
#
# If every clustered neuron really is its frequency's 3×3 block, we can replace each neuron by its projection
# onto that block and the model should still work.
#
# **Exercise — `project_onto_direction(batch_vecs, v)`.** Project every column of `batch_vecs` $(n, \dots)$
# onto the direction `v` $(n,)$ along the first (batch) axis. Assume `v` has unit norm; do not normalise it.
#
# Return a tensor of the same shape and dtype as `batch_vecs`.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 10 minutes
#
# <details><summary>Hint</summary>
#
# The coefficient of each column is its dot product with `v` along the batch axis:
# `einops.einsum(batch_vecs, v, "batch ..., batch -> ...")`; the projection is `v` times that coefficient,
# again with `einops.einsum`.
# </details>
#
# **Exercise — `project_onto_frequency(batch_vecs, freq)`.** `batch_vecs` has a batch axis of size $p^2$ (one
# row per input, index $x p + y$). Project onto the span of the nine 2D basis terms of frequency `freq`'s block.
# The terms are orthonormal, so the projection is the sum of the nine projections. Same shape and dtype as
# `batch_vecs`.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# The nine terms are `fourier_2d_basis_term(i, j).flatten()` for `i, j` in `[0, 2 * freq - 1, 2 * freq]`;
# add up `project_onto_direction` onto each.
# </details>


# %%
def project_onto_direction(
    batch_vecs: Float[Tensor, "batch ..."], v: Float[Tensor, "batch"]
) -> Float[Tensor, "batch ..."]:
    """Project each column of batch_vecs onto the unit vector v (along the batch axis); same shape and dtype."""
    ### BEGIN SOLUTION
    coefficients = einops.einsum(batch_vecs, v, "batch ..., batch -> ...")
    return einops.einsum(v, coefficients, "batch, ... -> batch ...")
    ### END SOLUTION


# %%
tests.test_project_onto_direction(project_onto_direction)


# %%
def project_onto_frequency(batch_vecs: Float[Tensor, "batch ..."], freq: int) -> Float[Tensor, "batch ..."]:
    """Project batch_vecs (batch axis of size p^2) onto the 9 2D Fourier terms of frequency freq's block;
    same shape and dtype."""
    ### BEGIN SOLUTION
    return sum(
        project_onto_direction(batch_vecs, fourier_2d_basis_term(i, j).flatten())
        for i in [0, 2 * freq - 1, 2 * freq]
        for j in [0, 2 * freq - 1, 2 * freq]
    )
    ### END SOLUTION


# %%
tests.test_project_onto_frequency(project_onto_frequency, p)

# %% [markdown]
# Now rebuild the logits from the neurons alone, each clustered neuron projected onto its own frequency and the
# cluster $-1$ neurons kept as they are, through `W_logit`. These logits leave out the output bias (the same for
# every input) and the direct paths around the MLP, which are *not* constant: the table of 1.3 shows what
# adding the direct path back changes. `bias_correction=True` adds back only the constant part of what is
# left out (the mean over inputs), so this measures how much of the answer the neurons alone carry.


# %%
utils.needs("project_onto_frequency", "key_freqs", "W_logit")


def neuron_logits(keep_unclustered: bool = True) -> Tensor:
    """Logits from the neurons only, every clustered neuron projected onto its own frequency's block."""
    new_acts = torch.zeros_like(neuron_acts_post)
    for freq, idx in clusters.items():
        if freq == -1:
            if keep_unclustered:
                new_acts[:, idx] = neuron_acts_post[:, idx]
        else:
            new_acts[:, idx] = project_onto_frequency(neuron_acts_post[:, idx], freq)
    return new_acts @ W_logit


loss_projected = test_logits(neuron_logits(), bias_correction=True, original_logits=original_logits)
loss_projected_no_unclustered = test_logits(neuron_logits(False), bias_correction=True, original_logits=original_logits)
print(f"original loss:                                       {original_loss.item():.3e}")
print(f"neurons projected onto their frequency:              {loss_projected:.3e}")
print(f"... and the cluster -1 neurons dropped:              {loss_projected_no_unclustered:.3e}")
print(
    f"projecting multiplies the loss by {loss_projected / original_loss.item():.2g}"
    + (" (lower: what the projection removed was only hurting)" if loss_projected < original_loss.item() else "")
)

# %% [markdown]
# If projecting leaves the loss within a small factor of the original (or even lowers it: what it removed was
# noise), the clustered neurons *are* their frequency blocks as far as the logits are concerned; the printout
# gives the factor for your run. Now the other direction:
# **ablate** one cluster at a time — remove its contribution to the logits (bias-corrected, so removing it or
# replacing it with its mean over inputs is the same) — and see how much each frequency matters.

# %%
utils.needs("key_freqs", "W_logit")
cluster_ablation = {}
for freq in key_freqs:
    idx = clusters[freq]
    ablated = original_logits - neuron_acts_post[:, idx] @ W_logit[idx]
    cluster_ablation[freq] = test_logits(ablated, bias_correction=True, original_logits=original_logits)
    ablated_accuracy = (ablated.argmax(-1) == labels).float().mean().item()
    print(
        f"without the frequency-{freq} cluster ({len(idx):>3} neurons): loss {cluster_ablation[freq]:.3e} "
        f"({cluster_ablation[freq] / original_loss.item():,.0f} x the original), accuracy {ablated_accuracy:.2%}"
    )
most_important = max(cluster_ablation, key=cluster_ablation.get)
print(
    f"\nThe most important cluster is frequency {most_important}: ablating it multiplies the loss by "
    f"{cluster_ablation[most_important] / original_loss.item():.1e}."
)

# %% [markdown]
# The printout says how much each cluster matters for the loss (in the course's published model every one of
# them costs orders of magnitude; a run can also have a cluster that matters much less). The accuracies add a
# second view: they show whether the remaining
# frequencies still put the highest logit on the right answer once one frequency is gone (the next section
# explains why several frequencies work together).
#
# ## 2.6 Why it works
#
# Each cluster's neurons end up contributing to the logit of $z$ a term
# $\cos(\omega_k(x + y - z)) = \cos(\omega_k(x+y))\cos(\omega_k z) + \sin(\omega_k(x+y))\sin(\omega_k z)$.
# Summing over the key frequencies, the logits are approximately
#
# $$\text{logit}(z) \approx \sum_k C_k \cos(\omega_k (x + y - z)).$$
#
# **Question.** Why does this pick out $z = (x + y) \bmod p$?
#
# <details><summary>Answer</summary>
#
# Each term is a wave in $z$ that peaks (value $C_k$) exactly at $z \equiv x + y \pmod p$, because
# $\omega_k p = 2\pi k$ makes the cosine periodic mod $p$. At any other $z$ the terms of the different
# frequencies are out of phase with each other and partly cancel. Only at the right answer do all of them
# interfere constructively, so the sum has a sharp maximum there.
#
# Why not a single wave? $\cos(\omega_k d)$, with $d = x + y - z$, is also largest only at $d = 0$, but its
# runner-up is almost as large: at the $d$ with $k d \equiv \pm 1 \pmod p$ it equals $\cos(2\pi/p) \approx
# 0.998$. That runner-up is *not* an answer close to $x + y$ (for $k > 1$ it is $d = \pm k^{-1} \bmod p$,
# anywhere in $\mathbb{Z}_p$); the problem is the tiny margin, which any noise would overturn. Several
# frequencies peak together only at $d = 0$, and their runner-ups fall at different places, so the margin
# grows (printed below, with equal weights $C_k = 1$).
# </details>

# %%
utils.needs("key_freqs")
for freqs in ([key_freqs[0]], key_freqs):
    best, runner_up = circuit_checks.single_wave_margin(p, freqs)
    print(
        f"sum of cos(w_k d) over k in {freqs}: {best:.3f} at d = 0, at most {runner_up:.3f} elsewhere "
        f"(margin {best - runner_up:.3f}, {(best - runner_up) / best:.1%} of the peak)"
    )

# %% [markdown]
# ## 2.7 From neurons to logits
#
# How do neurons with constant, linear *and* quadratic terms produce logits with only the $\cos/\sin(\omega(x+y))$
# terms? Take the biggest cluster and compare, in the 2D Fourier basis, its neurons' activations with their
# contribution to the logits (averaged over neurons, respectively over output logits).

# %%
utils.needs("key_freqs", "W_logit", "fft2d")
idx = clusters[big_freq]  # the largest cluster (as in 2.4)
cluster_contribution = neuron_acts_post[:, idx] @ W_logit[idx]  # (p^2, p)
cluster_contribution = cluster_contribution - cluster_contribution.mean(0)
fourier_cluster_logits = fft2d(einops.rearrange(cluster_contribution, "(x y) z -> x y z", x=p))
panels = torch.stack(
    [fourier_neuron_acts[:, :, idx].pow(2).mean(-1), fourier_cluster_logits.pow(2).mean(-1)], dim=-1
).sqrt()
panels = panels / panels.amax((0, 1), keepdim=True)
utils.imshow_fourier(
    panels,
    midpoint=None,
    color_continuous_scale="Blues",
    facet_labels=[f"neurons of cluster {big_freq}", "their logit contribution"],
    title=f"Cluster {big_freq}: root mean squared 2D Fourier coefficients (each panel scaled to max 1)",
).show()

# %% [markdown]
# Compare the panels: in the logit contribution the constant and linear terms (first row and column) fade and
# the 2×2 block stays. But the 2×2 block holds *two* kinds of functions. With $\omega = \omega_k$,
#
# $$\cos\omega x \cos\omega y = \tfrac12\big(\cos(\omega(x+y)) + \cos(\omega(x-y))\big), \qquad
# \sin\omega x \sin\omega y = \tfrac12\big(\cos(\omega(x-y)) - \cos(\omega(x+y))\big),$$
#
# and similarly for the mixed terms with $\sin(\omega(x \pm y))$. So the block is spanned by
# $\cos/\sin(\omega(x+y))$ (what the answer needs) and $\cos/\sin(\omega(x-y))$ (useless for addition). The
# figure above cannot tell them apart; the shares can. `utils.sum_difference_shares(grid, key_freqs)` returns
# the fraction of the centred variance of a $(p, p, n)$ grid that lies in the $\cos/\sin(\omega_k(x+y))$
# directions and the fraction in the $\cos/\sin(\omega_k(x-y))$ directions of the key frequencies.


# %%
utils.needs("key_freqs", "cluster_contribution")


def as_grid(acts: Tensor) -> Tensor:
    """(p^2, n) activations -> (p, p, n) grid indexed [x, y, ...]."""
    return einops.rearrange(acts, "(x y) n -> x y n", x=p)


logits_centred = original_logits - original_logits.mean(0)
shares = {
    "neurons (post-ReLU)": utils.sum_difference_shares(as_grid(neuron_acts_post), key_freqs),
    f"cluster {big_freq}'s neurons": utils.sum_difference_shares(as_grid(neuron_acts_post[:, idx]), [big_freq]),
    f"cluster {big_freq}'s logit contribution": utils.sum_difference_shares(as_grid(cluster_contribution), [big_freq]),
    "logits": utils.sum_difference_shares(as_grid(logits_centred), key_freqs),
}
print(f"{'share of the centred variance in':<40}{'cos/sin(w(x+y))':>17}{'cos/sin(w(x-y))':>17}")
for name, (sum_share, diff_share) in shares.items():
    print(f"{name:<40}{sum_share:>17.1%}{diff_share:>17.1%}")
neuron_diff, logit_diff = shares["neurons (post-ReLU)"][1], shares["logits"][1]
print(
    f"-> the x - y share goes from {neuron_diff:.1%} in the neurons to {logit_diff:.2%} in the logits"
    + (" : W_logit cancels it" if logit_diff < 0.1 * neuron_diff else "")
)

# %% [markdown]
# **Why the $x - y$ terms cancel.** Take a neuron of frequency $k$ whose pre-activation is (about)
# $\cos(\omega x + \phi) + \cos(\omega y + \phi)$ — symmetric in $x$ and $y$ (1.2), with its own phase $\phi$.
# Its product term is $\cos(\omega x + \phi)\cos(\omega y + \phi) = \tfrac12\big(\cos(\omega(x+y) + 2\phi) +
# \cos(\omega(x-y))\big)$: the $x + y$ part carries the neuron's phase, the $x - y$ part **does not** — every
# neuron of the cluster has the same $\cos(\omega(x-y))$ term, up to its size. Through `W_logit`, neuron $n$
# writes that term times its row $W_{logit}[n, z]$, so the cluster writes $\cos(\omega(x-y)) \sum_n c_n
# W_{logit}[n, z]$. The rows are waves $\cos(\omega z + \psi_n)$ with phases spread around the circle, and a
# sum of waves with spread phases nearly vanishes. The $x + y$ parts instead line up: $\psi_n$ follows
# $2\phi_n$, so every neuron adds to the same $\cos(\omega(x + y - z))$. The printout checks the premise:
# the summed rows of the cluster's `W_logit`, against the sum of their norms.

# %%
utils.needs("key_freqs", "W_logit")
row_sum = W_logit[idx].sum(0).norm().item()
row_norms = W_logit[idx].norm(dim=1).sum().item()
print(
    f"cluster {big_freq}: |sum of its {len(idx)} W_logit rows| = {row_sum:.3g}, sum of the rows' norms = {row_norms:.3g} "
    f"(ratio {row_sum / max(row_norms, 1e-30):.1%}: near 0 means their phases cancel)"
)

# %% [markdown]
# **The $x + y$ structure, seen directly.** The cluster's neurons write to the logits only through the
# $\cos(\omega_k z)$ and $\sin(\omega_k z)$ columns of `W_logit` in the Fourier basis (next cell). Read the
# cluster's rows of those two columns as a matrix $(n_{neurons}, 2)$ and take its SVD: the two left singular
# vectors $u_1, u_2$ are directions in the cluster's neuron space, the two combinations of neurons the logits
# actually read. $\sigma_u(x, y)$ = the neuron activations along $u$ is a $(p, p)$ map. Plot it in the 2D
# Fourier basis; the printout gives the four cells of its 2×2 block.

# %%
utils.needs("key_freqs", "W_logit", "fft2d")
cos_col, sin_col = 2 * big_freq - 1, 2 * big_freq
read_columns = (W_logit[idx] @ fourier_basis.T)[:, [cos_col, sin_col]]  # (n, 2): rows of W_logit in cos/sin k
u_dirs, read_strength, _ = torch.linalg.svd(read_columns, full_matrices=False)  # u_dirs (n, 2)
sigma_u = as_grid(neuron_acts_post[:, idx] @ u_dirs)  # (p, p, 2)
sigma_u_fourier = fft2d(sigma_u - sigma_u.mean((0, 1)))
utils.imshow_fourier(
    sigma_u_fourier,
    facet_labels=["u_1", "u_2"],
    title=f"Cluster {big_freq}: neuron activations along the two directions W_logit reads, in the 2D Fourier basis",
).show()
for j, name in enumerate(["u_1", "u_2"]):
    c = sigma_u_fourier[:, :, j]
    others = c.abs().clone()
    others[cos_col : sin_col + 1, cos_col : sin_col + 1] = 0  # every cell outside the 2x2 block
    print(
        f"{name}: cos x cos y {c[cos_col, cos_col]:+8.2f}   sin x sin y {c[sin_col, sin_col]:+8.2f}   "
        f"cos x sin y {c[cos_col, sin_col]:+8.2f}   sin x cos y {c[sin_col, cos_col]:+8.2f}   "
        f"(largest cell outside the block: {others.max():.2f})"
    )

# %% [markdown]
# **Question.** Interpret the plot. What do the signs of the four cells say?
#
# <details><summary>Answer</summary>
#
# $\cos(\omega(x+y)) = \cos\omega x\cos\omega y - \sin\omega x\sin\omega y$ has the two diagonal cells of the
# block with **opposite** signs and no mixed cells; $\sin(\omega(x+y)) = \sin\omega x\cos\omega y +
# \cos\omega x\sin\omega y$ has the two mixed cells with the **same** sign and no diagonal ones. A mixture of
# the two (any phase $\cos(\omega(x+y) + \theta)$) has both patterns, in proportion. The $x - y$ functions
# would show the *other* signs: $\cos(\omega(x-y))$ has equal diagonal cells, $\sin(\omega(x-y))$ mixed cells
# of opposite sign. If the printed cells follow the $x + y$ signs (diagonal cells of opposite sign, mixed cells
# of equal sign, each up to the small $x - y$ remainder), the directions the logits read are functions of
# $x + y$: the cancellation above happens already in the neuron space.
# </details>
#
# **Question.** Why two directions, and not one?
#
# <details><summary>Answer</summary>
#
# The logit of $z$ needs $\cos(\omega(x + y - z)) = \cos(\omega(x+y))\cos(\omega z) + \sin(\omega(x+y))\sin(\omega z)$:
# both $\cos(\omega(x+y))$ and $\sin(\omega(x+y))$, one for each output column. One direction could only hold
# one phase of the wave.
# </details>
#
# Now look at `W_logit` itself in the Fourier basis (along its output axis $z$): each neuron writes to
# $\cos(\omega_k z)$ and $\sin(\omega_k z)$ of its own frequency.

# %%
utils.needs("key_freqs", "W_logit")
W_logit_fourier = W_logit @ fourier_basis.T  # (d_mlp, p): output axis in the Fourier basis
order = torch.cat([clusters[k] for k in clusters])  # neurons sorted by cluster
utils.imshow_div(
    W_logit_fourier[order],
    x=fourier_basis_names,
    xaxis="Fourier component of the output z",
    yaxis="neuron (sorted by cluster)",
    title="W_logit in the Fourier basis",
).show()

key_components = [i for k in key_freqs for i in (2 * k - 1, 2 * k)]
share = W_logit_fourier[:, key_components].pow(2).sum() / W_logit_fourier.pow(2).sum()
print(
    f"share of W_logit's squared norm in the cos/sin of the key frequencies ({len(key_components)} of {p} components): {share:.1%}"
)
for k in key_freqs:
    rows = W_logit_fourier[clusters[k]].pow(2)
    print(
        f"  cluster {k:>2}: {rows[:, [2 * k - 1, 2 * k]].sum() / rows.sum().clamp_min(1e-30):.1%} of its rows' squared norm in cos/sin {k}"
    )

# %% [markdown]
# **`W_logit` is low-rank, and its directions are the key frequencies.** If every neuron writes only to the
# cos/sin of its frequency, `W_logit` $= W_{out} W_U$ has rank about $2K$ for $K$ key frequencies, and its top
# right-singular vectors — functions of the output $z$ — lie in the span of $\cos(\omega_k z)$,
# $\sin(\omega_k z)$ for the key $k$. Check it: for each of the top $2K + 2$ right-singular vectors, the
# fraction of its (unit) norm in those $2K$ directions and the frequency holding most of it.
#
# **Question.** Why two singular directions per frequency, and what would a singular vector with a large
# constant component mean?
#
# <details><summary>Answer</summary>
#
# A frequency needs both $\cos(\omega_k z)$ and $\sin(\omega_k z)$ to write $\cos(\omega_k(x + y - z))$ for
# every $x + y$: the phase $\omega_k(x+y)$ changes with the input, and only a cos/sin pair can represent every
# phase. A constant direction would add the same amount to every logit $z$, which the softmax ignores — weight
# decay removes such useless weight, so we expect none (and a loss that is unchanged if it were there).
# </details>

# %%
utils.needs("key_freqs", "W_logit")
n_top = 2 * len(key_freqs) + 2
logit_svd = circuit_checks.singular_vector_frequency_share(W_logit, key_freqs, n_top=n_top)
for i, (sv, share_i, freq) in enumerate(
    zip(logit_svd.singular_values.tolist(), logit_svd.key_share.tolist(), logit_svd.best_freq.tolist())
):
    print(
        f"singular vector {i:>2}: singular value {sv:7.2f}, {share_i:6.1%} in the key frequencies' cos/sin (mostly frequency {freq})"
    )
top_share = logit_svd.key_share[: 2 * len(key_freqs)]
print(
    f"-> the top {2 * len(key_freqs)} directions: {top_share.min():.1%} or more in the key frequencies; "
    f"the next ones have {logit_svd.singular_values[2 * len(key_freqs)] / logit_svd.singular_values[0]:.1%} of the top singular value"
)

# %% [markdown]
# ## 2.8 Keeping only the trig-sum directions
#
# The strongest test of the story: keep *only* the parts of the logits that are $\cos(\omega_k(x+y))$ and
# $\sin(\omega_k(x+y))$ along the batch axis, for the key frequencies, and throw everything else away.
#
# In terms of 2D basis terms, $\cos(\omega(x+y)) = \cos\omega x \cos\omega y - \sin\omega x \sin\omega y$ and
# $\sin(\omega(x+y)) = \sin\omega x\cos\omega y + \cos\omega x \sin\omega y$.
#
# **Exercise — `get_trig_sum_directions(k)`.** Return the $(p, p)$ grids of the **unit-norm** directions
# $\cos(\omega_k(x+y))$ and $\sin(\omega_k(x+y))$, built from `fourier_2d_basis_term` (each of the two is a
# sum of two orthonormal terms: what normalises it?). Both are float32 tensors.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 10 minutes
#
# <details><summary>Hint 1</summary>
#
# $\cos(\omega(x+y))$ is `fourier_2d_basis_term(2k-1, 2k-1) - fourier_2d_basis_term(2k, 2k)`, up to a
# factor.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Two orthonormal vectors added or subtracted have norm $\sqrt 2$.
# </details>


# %%
def get_trig_sum_directions(k: int) -> tuple[Float[Tensor, "p p"], Float[Tensor, "p p"]]:
    """Return (cos_dir, sin_dir): unit-norm (p, p) float32 grids of cos(w_k (x + y)) and sin(w_k (x + y))."""
    ### BEGIN SOLUTION
    cos_x_cos_y = fourier_2d_basis_term(2 * k - 1, 2 * k - 1)
    sin_x_sin_y = fourier_2d_basis_term(2 * k, 2 * k)
    sin_x_cos_y = fourier_2d_basis_term(2 * k, 2 * k - 1)
    cos_x_sin_y = fourier_2d_basis_term(2 * k - 1, 2 * k)
    cos_dir = (cos_x_cos_y - sin_x_sin_y) / math.sqrt(2)
    sin_dir = (sin_x_cos_y + cos_x_sin_y) / math.sqrt(2)
    return cos_dir, sin_dir
    ### END SOLUTION


# %%
tests.test_get_trig_sum_directions(get_trig_sum_directions, p)

# %%
utils.needs("get_trig_sum_directions", "project_onto_direction", "key_freqs")
cos_dir, sin_dir = get_trig_sum_directions(key_freqs[0])
utils.inputs_heatmap(
    torch.stack([cos_dir, sin_dir], -1),
    facet_labels=[f"cos({key_freqs[0]}(x+y))", f"sin({key_freqs[0]}(x+y))"],
    title="Trig-sum directions: constant along the anti-diagonals x + y = const",
).show()

trig_logits = torch.zeros_like(original_logits)
for k in key_freqs:
    for direction in get_trig_sum_directions(k):
        trig_logits += project_onto_direction(original_logits, direction.flatten())
trig_loss = test_logits(trig_logits, bias_correction=True, original_logits=original_logits)
print(f"original loss:                                          {original_loss.item():.3e}")
print(f"only the cos/sin(w_k (x+y)) directions of {key_freqs}: {trig_loss:.3e}")
print(
    f"keeping only {2 * len(key_freqs)} of {p * p} directions {'does not raise' if trig_loss <= original_loss.item() else 'raises'} the loss "
    f"(ratio {trig_loss / original_loss.item():.2f})"
)

# %% [markdown]
# For the course's published model, keeping $2K$ directions out of $p^2$ (and the constant, restored by the
# bias correction) gives a loss *lower* than the full model's: the published ARENA chapter prints 5.55e-8
# against 2.41e-7 for it. There, everything else in the logits is noise that only hurts. The printout above
# says whether that holds for the model you loaded, and by how much.
#
# ### Recap of Section 2
#
# * The embedding uses a handful of frequencies; the neurons decide which are **key**: those with a cluster of
#   at least 1% of the neurons.
# * Most neurons are explained by one frequency's 3×3 block: constant, linear and quadratic terms. The ReLU
#   makes most of the quadratic (product) terms; attention makes some (1.2 and the scatter in 2.4).
# * Projecting every neuron onto its frequency barely changes the loss; ablating one cluster hurts it badly.
# * The neurons carry both $\cos/\sin(\omega(x+y))$ and $\cos/\sin(\omega(x-y))$ terms; `W_logit` keeps the
#   $x + y$ half (the $x - y$ terms of a cluster cancel through the spread phases of its `W_logit` rows), through
#   about two directions per key frequency, $\cos/\sin(\omega_k z)$. The logits are
#   $\sum_k C_k \cos(\omega_k(x + y - z))$, which peaks at $z = x + y$ — and keeping only those directions of
#   the logits keeps the model's performance (2.8 prints by how much for this run).
#
# # Section 3: Analysis during training
#
# **Learning objectives**
#
# * Define progress measures from the mechanism found in Sections 1–2 (excluded loss, restricted loss, Fourier
#   sparsity of the weights) and compute them over training.
# * Read the grokking curve as three phases — memorisation, circuit formation, cleanup — and see that the
#   circuit forms gradually, long before the test loss moves.
# * Know what such measures show and what they cannot: they are defined by the final model's algorithm.
#
# We know what the final model computes. How did it get there? Loading every checkpoint into a model and
# rerunning all of the above would be slow, so `utils.compute_dynamics` computes the progress measures of this
# section for every checkpoint at once (batched over checkpoints) and caches them on disk in a writable folder
# (`utils.cache_dir()`, never next to the run file, which may be read-only). The key frequencies are those
# of the analysed model, fixed for all checkpoints. The first time, this is the slowest cell of Sections 1–3: for
# the default run (150 checkpoints analysed) it took 71 s, measured on a 2-core CPU that was also running other
# work (the cell prints its own time); afterwards it loads from the cache in a second.

# %%
utils.needs("key_freqs")  # checked before the expensive work
t0 = time.perf_counter()
stride = math.ceil(len(checkpoint_epochs) / 250)  # at most ~250 checkpoints: plenty for the plots, and quick
dynamics = utils.compute_dynamics(
    full_run_data, key_freqs, cache=True, final_checkpoint=analysed_index, stride=stride, device=device
)
checkpoint_gap = checkpoint_epochs[1] - checkpoint_epochs[0] if len(checkpoint_epochs) > 1 else 0
print(
    f"progress measures of {len(dynamics)} checkpoints (every {stride * checkpoint_gap} epochs) "
    f"in {time.perf_counter() - t0:.1f} s (cache folder: {utils.cache_dir()})"
)
epochs = dynamics.epochs.numpy()

# A run file whose checkpoints all hold the same weights (e.g. a file made for testing) has nothing to show here.
first_weights, analysed_weights = full_run_data["state_dicts"][0], full_run_data["state_dicts"][analysed_index]
frozen_run = len(checkpoint_epochs) < 2 or all(
    torch.equal(first_weights[name], analysed_weights[name]) for name in first_weights
)
if frozen_run:
    print(
        "Note: the first and the analysed checkpoint of this run file hold the same weights, so every progress measure "
        "below is flat and no training phases can be read from it. The plots still draw; the conclusions in the text "
        "do not apply to this file."
    )

# %% [markdown]
# ## 3.1 The grokking curve and its phases
#
# The train and test loss on a log scale. We split training into phases using only these curves:
#
# * **memorisation** ends when the test loss peaks: the train loss is small by then, and from here on fitting
#   the training set even better no longer comes at the test set's expense;
# * **circuit formation** lasts until the test loss has fallen an order of magnitude below its peak — the
#   general algorithm grows quietly inside the memorising network;
# * **cleanup** lasts until the test loss is within a factor 3 of its final value: weight decay removes the
#   memorisation, the test loss collapses and settles.


# %%
utils.needs("dynamics")


def find_phases(test_epochs: np.ndarray, test_losses: np.ndarray) -> list[tuple[str, float, float]]:
    """Phases of a grokking run, as (name, start_epoch, end_epoch), derived from the test-loss curve.
    Returns [] (and says why) when the curve cannot show phases: too short, flat, or not finite."""
    finite = np.isfinite(test_losses)
    if len(test_losses) < 3 or not finite.all() or test_losses.max() < 10 * test_losses.min():
        print(
            f"Note: no training phases found: the test-loss curve has {len(test_losses)} points"
            + ("" if finite.all() else ", some not finite")
            + f" and varies by a factor "
            f"{test_losses[finite].max() / max(test_losses[finite].min(), 1e-300) if finite.any() else float('nan'):.3g} (< 10)."
        )
        return []
    peak = int(np.argmax(test_losses))
    end_memorisation = float(test_epochs[peak])
    after_peak = np.arange(peak, len(test_losses))
    fallen = after_peak[test_losses[after_peak] < test_losses[peak] / 10]
    end_formation = float(test_epochs[fallen[0]]) if len(fallen) else float(test_epochs[-1])
    final = np.median(test_losses[-max(1, len(test_losses) // 20) :])
    settled = after_peak[(test_losses[after_peak] < 3 * final) & (test_epochs[after_peak] >= end_formation)]
    end_cleanup = float(test_epochs[settled[0]]) if len(settled) else float(test_epochs[-1])
    phases = [
        ("memorisation", float(test_epochs[0]), end_memorisation),
        ("circuit formation", end_memorisation, end_formation),
        ("cleanup", end_formation, end_cleanup),
    ]
    return [(name, start, end) for name, start, end in phases if end > start]


phases = [] if frozen_run else find_phases(test_epochs, test_losses)
for name, start, end in phases:
    print(f"{name:>18}: epochs {start:>6.0f} - {end:>6.0f}")

# one point per test interval is plenty for a plot (the train loss is recorded every epoch)
fig = utils.lines(
    [train_losses[np.minimum(test_epochs, len(train_losses) - 1)], test_losses],
    x=test_epochs,
    labels=["train", "test"],
    log_y=True,
    xaxis="epoch",
    yaxis="loss",
    title="The grokking curve",
)
utils.mark_phases(fig, phases).show()

# %% [markdown]
# ## 3.2 Excluded loss
#
# A progress measure for the circuit: if the model uses frequency $k$, removing the $\cos/\sin(\omega_k(x+y))$
# directions from its logits should hurt its **train** loss, even while it still memorises.
#
# **Exercise — `excl_loss(model, key_freqs)`.** For each key frequency, compute the model's last-position
# logits over all inputs (`=` logit dropped), subtract their projections onto that frequency's two trig-sum
# directions (along the batch axis), and return the loss of what remains on the **train** pairs (no bias
# correction). Use your functions from Section 2 and `test_logits(..., mode="train")`. Return a list of Python
# floats, one per key frequency. Use the `model` argument, not the notebook's `original_logits`: Section 3.5
# calls your function on other checkpoints.
#
# > Difficulty 🔴🔴⚪⚪⚪ · Importance 🔵🔵🔵🔵⚪ · about 10 minutes
#
# <details><summary>Hint</summary>
#
# `model(all_data)[:, -1, :-1]` gives the logits. For each `k`, subtract
# `project_onto_direction(logits, d.flatten())` for both directions `d` of `get_trig_sum_directions(k)`, then
# score with `test_logits(excluded, mode="train")`.
# </details>


# %%
def excl_loss(model: HookedTransformer, key_freqs: list[int]) -> list[float]:
    """Train loss (a float per key frequency) after removing its cos/sin(w_k(x+y)) directions from the logits."""
    ### BEGIN SOLUTION
    logits = model(all_data)[:, -1, :-1]
    losses = []
    for k in key_freqs:
        excluded = logits.clone()
        for direction in get_trig_sum_directions(k):
            excluded -= project_onto_direction(logits, direction.flatten())
        losses.append(test_logits(excluded, mode="train"))
    return losses
    ### END SOLUTION


# %%
# The grader uses the package's key frequencies (so it does not depend on your earlier answers) and this run's split.
tests.test_excl_loss(excl_loss, model, utils.key_frequencies(model), run=full_run_data)

# %%
utils.needs("excl_loss", "key_freqs", "dynamics")
final_excl = excl_loss(model, key_freqs)
final_train_loss = test_logits(original_logits, mode="train")
for k, loss in zip(key_freqs, final_excl):
    print(
        f"excluding frequency {k:>2}: train loss {loss:.3e}  ({loss / final_train_loss:,.0f} x the train loss {final_train_loss:.2e})"
    )

test_starts_falling = first_epoch_below(test_epochs, test_losses, 1.0)
n_early = 0
for k, excluded in zip(key_freqs, dynamics.excluded_loss.T):
    hurts = np.nonzero((excluded / dynamics.train_loss).numpy() > 10)[0]  # checkpoints where it costs > 10x
    print(
        f"excluding frequency {k:>2} first costs 10x the train loss at epoch {epochs[hurts[0]] if len(hurts) else 'never'}"
    )
    n_early += bool(len(hurts)) and test_starts_falling is not None and epochs[hurts[0]] < test_starts_falling
print(
    f"(the test loss first falls below 1 at epoch {test_starts_falling}): {n_early} of {len(key_freqs)} key frequencies "
    f"matter to the train loss before the test loss moves"
)

fig = utils.lines(
    [dynamics.train_loss, dynamics.test_loss, *dynamics.excluded_loss.T, dynamics.excluded_loss_all_keys],
    x=epochs,
    labels=["train", "test", *[f"excluded {k}" for k in key_freqs], "excluded: all keys"],
    log_y=True,
    xaxis="epoch",
    yaxis="loss",
    title="Excluded loss (train pairs) during training",
)
utils.mark_phases(fig, phases).show()

# %% [markdown]
# At first the excluded losses track the train loss: nothing depends on the key frequencies yet. Then, one
# frequency after another, removing it starts to hurt the **train** loss — the model relies on the Fourier
# circuit to fit its training set, and (the count printed above) frequencies do so before the test loss moves.
# By the end, removing even one frequency costs orders of magnitude in loss (the summary at the end checks
# it for this run).
#
# ## 3.3 The embedding's Fourier norms over training
#
# **Exercise — `fourier_embed(model)`.** Return the squared norm of each Fourier component of the embedding
# without the `=` row: express `W_E`'s token axis in the Fourier basis and sum the squares over `d_model`.
# Shape $(p,)$. Since the rows of `fourier_basis` are the basis vectors, the coefficients are
# `fourier_basis @ W_E` — multiplying by `fourier_basis.T` instead would be a mistake that still gives
# plausible-looking numbers. Return a float tensor of shape $(p,)$ in the dtype of the model's weights.
#
# > Difficulty 🔴⚪⚪⚪⚪ · Importance 🔵🔵🔵⚪⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# Read `W_E` from the `model` argument (`model.W_E[:-1]`), make the basis with your `make_fourier_basis`, move it
# with `.to(W_E)`, and sum the squares of `basis @ W_E` over its last axis.
# </details>


# %%
def fourier_embed(model: HookedTransformer) -> Float[Tensor, "p"]:
    """Squared norm (p,) (dtype of W_E) of each Fourier component (const, cos 1, sin 1, ...) of W_E without `=`."""
    ### BEGIN SOLUTION
    W_E = model.W_E[:-1]
    basis, _ = make_fourier_basis(W_E.shape[0])
    return (basis.to(W_E) @ W_E).pow(2).sum(1)
    ### END SOLUTION


# %%
tests.test_fourier_embed(fourier_embed, model)

# %% [markdown]
# The same quantity for every checkpoint (`dynamics.fourier_embed`), animated. Drag the slider and look for the
# paper's picture: the key frequencies grow during circuit formation, and everything else decays during
# cleanup (the Gini coefficient of 3.6 puts a number on it).

# %%
utils.needs("dynamics", "fourier_basis")
frames = np.unique(np.linspace(0, len(epochs) - 1, 40).round().astype(int))  # ~40 frames keep the figure light
utils.animate_lines(
    dynamics.fourier_embed[frames],
    hover=fourier_basis_names,
    frame_labels=epochs[frames],
    animation_name="epoch",
    xaxis="Fourier component",
    yaxis="squared norm",
    title="Fourier components of W_E during training",
).show()

# %% [markdown]
# ## 3.4 The embedding's singular values over training
#
# **Exercise — `embed_SVD(model)`.** Return the singular values of the embedding without the `=` *row*
# (`W_E[:-1]`, shape $(p, d_{model})$ in TransformerLens' layout), in descending order. Careful: dropping the
# last *column* instead would remove a `d_model` dimension and keep the `=` token. Return a 1-D float tensor
# in the dtype of the model's weights.
#
# > Difficulty 🔴⚪⚪⚪⚪ · Importance 🔵🔵⚪⚪⚪ · about 5 minutes
#
# <details><summary>Hint</summary>
#
# `torch.linalg.svdvals` returns the singular values in descending order.
# </details>


# %%
def embed_SVD(model: HookedTransformer) -> Float[Tensor, "n_sv"]:
    """Singular values (descending; dtype of W_E) of W_E without the `=` row."""
    ### BEGIN SOLUTION
    return torch.linalg.svdvals(model.W_E[:-1])
    ### END SOLUTION


# %%
tests.test_embed_SVD(embed_SVD, model)

# %%
utils.needs("dynamics", "frames")
utils.animate_lines(
    dynamics.embed_singular_values[frames],
    frame_labels=epochs[frames],
    animation_name="epoch",
    xaxis="index",
    yaxis="singular value",
    title="Singular values of W_E during training",
).show()
final_sv = dynamics.embed_singular_values[-1]
n_large_sv = int((final_sv > 0.1 * final_sv[0]).sum())
print(
    f"final model: {n_large_sv} singular values above 10% of the largest; the embedding carries "
    f"{len(embed_freqs)} frequencies ({embed_freqs}), i.e. {2 * len(embed_freqs)} cos/sin directions, of which "
    f"the neurons use {2 * len(key_freqs)} (key frequencies {key_freqs})"
)
print(
    "   -> about two singular values per embedding frequency, as expected"
    if abs(n_large_sv - 2 * len(embed_freqs)) <= 1
    else "   -> not two per embedding frequency: the embedding also keeps weaker directions (see the 2.1 plot)"
)

# %% [markdown]
# ## 3.5 Your functions over training
#
# The curves above come from the package's batched engine. Your own `excl_loss`, `fourier_embed` and
# `embed_SVD` compute the same measures one model at a time: apply them to every $n$-th checkpoint (a handful,
# so this takes seconds), plot what they give, and check that they agree with the engine.

# %%
student = {"excl_loss": [], "fourier_embed": [], "embed_SVD": []}  # (the summary reads it)
utils.needs("excl_loss", "fourier_embed", "embed_SVD", "dynamics")
n_student_points = 6
student_rows = np.unique(np.linspace(0, len(epochs) - 1, n_student_points).round().astype(int))  # rows of `dynamics`
t0 = time.perf_counter()
for row in student_rows:
    checkpoint = checkpoint_epochs.index(int(epochs[row]))  # the same checkpoint the engine used for that row
    m = full_run_data.model(checkpoint, device=device)
    student["excl_loss"].append(excl_loss(m, key_freqs))
    student["fourier_embed"].append(fourier_embed(m).cpu())
    student["embed_SVD"].append(embed_SVD(m).cpu())
print(f"your three functions on {len(student_rows)} checkpoints: {time.perf_counter() - t0:.1f} s")
mine = torch.tensor(student["excl_loss"], dtype=torch.float64)  # (n_points, n_keys)
engine = dynamics.excluded_loss[student_rows]
log_gap = (mine.log10() - engine.log10()).abs().max().item()
embed_gap = (torch.stack(student["fourier_embed"]).double() - dynamics.fourier_embed[student_rows]).abs().max().item()
svd_gap = (torch.stack(student["embed_SVD"]).double() - dynamics.embed_singular_values[student_rows]).abs().max().item()
print(
    f"agreement with the engine: excluded loss within a factor {10**log_gap:.4f}; "
    f"fourier_embed max |diff| {embed_gap:.2e} (values up to {dynamics.fourier_embed.max():.3g}); "
    f"embed_SVD max |diff| {svd_gap:.2e}"
)
fig = utils.lines(
    [*mine.T, *engine.T],
    x=epochs[student_rows],
    labels=[f"yours: excluded {k}" for k in key_freqs] + [f"engine: excluded {k}" for k in key_freqs],
    log_y=True,
    xaxis="epoch",
    yaxis="train loss",
    title="Your excl_loss at a few checkpoints vs the engine",
)
utils.mark_phases(fig, phases).show()

# %% [markdown]
# ## 3.6 More progress measures
#
# `dynamics` holds several more measures, computed the same way for every checkpoint. Each tells part of the
# story.
#
# **How much of the activations lives in the trig-sum directions?** The fraction of the centred variance of
# the neuron pre-activations, post-activations and logits that lies in the $\cos/\sin(\omega_k(x+y))$
# directions of the key frequencies.

# %%
utils.needs("dynamics")
fig = utils.lines(
    [dynamics.trig_frac_pre, dynamics.trig_frac_post, dynamics.trig_frac_logits],
    x=epochs,
    labels=["neuron pre-activations", "neuron post-activations", "logits"],
    xaxis="epoch",
    yaxis="fraction of variance",
    title="Variance in the key frequencies' cos/sin(w(x+y)) directions",
)
utils.mark_phases(fig, phases).show()


# %%
utils.needs("dynamics", "interaction_pre_all")


def first_epoch_reaching(values: Tensor, fraction: float = 0.5) -> int | None:
    """First checkpoint epoch at which values reach `fraction` of the way from their first to their final value."""
    start, final = values[0].item(), values[-1].item()
    if abs(final - start) < 1e-12:
        return None
    reached = np.nonzero(((values.numpy() - start) / (final - start)) >= fraction)[0]
    return int(epochs[reached[0]]) if len(reached) else None


for name, values in [
    ("pre-activations", dynamics.trig_frac_pre),
    ("post-activations", dynamics.trig_frac_post),
    ("logits", dynamics.trig_frac_logits),
]:
    halfway = first_epoch_reaching(values)
    when = (
        ""
        if halfway is None or test_starts_falling is None
        else (
            f" ({'before' if halfway < test_starts_falling else 'after'} the test loss falls below 1, at epoch {test_starts_falling})"
        )
    )
    print(
        f"{name:>17}: {values[0]:.1%} at the start, {values.max():.1%} at most, {values[-1]:.1%} at the end; "
        f"halfway from start to end at epoch {halfway}{when}"
    )
print(
    f"(analysed model, from Section 1.2: {interaction_pre_all:.1%} of the pre-activations' variance and "
    f"{interaction_post_all:.1%} of the post-activations' is in interaction (product) terms of any frequency)"
)

# %% [markdown]
# Read the three curves with Section 1.2 in mind. The **pre-activations** are *not* pure sums of functions of
# $x$ and of $y$ — attention weights depend on both inputs — so they can hold some $\cos(\omega(x+y))$, and the
# printout says how much. The **post-activations** can hold more: the ReLU makes the products (but they also
# hold the $x - y$ terms and the linear terms, 2.7). The **logits** can hold the most, because `W_logit` keeps
# the $\cos/\sin(\omega_k(x+y))$ part and cancels the rest — compare the printed final values.
#
# **Which forms first?** Compare the "halfway" epochs printed above with each other and with the test loss.
# If the post-activations and the logits gain their trig-sum share before the test loss falls, the Fourier
# circuit is built while the model still memorises, and cleanup then removes what is left around it — the
# paper's story. Whether the logits or the neurons get there first says which end of the circuit leads: the
# logits can reach a large share while the neurons' share is still small, because `W_logit` reads only the
# trig-sum part of the neurons and ignores the rest.
#
# **Neurons joining their clusters.** For every checkpoint: each neuron's best frequency and the fraction of it
# that frequency explains, coloured by how often the neuron fires. Neurons drift towards the key frequencies
# and the fraction explained rises (the printout counts the neurons in a key-frequency cluster, first and last
# checkpoint).

# %%
utils.needs("dynamics", "frames")
utils.animate_scatter(
    dynamics.neuron_best_freq[frames],
    dynamics.neuron_frac_best_freq[frames],
    color=dynamics.neuron_fire_frac[frames],
    color_label="fires on",
    frame_labels=epochs[frames],
    animation_name="epoch",
    hover=[f"neuron {i}" for i in range(cfg.d_mlp)],
    xaxis="best frequency",
    yaxis="fraction explained",
    title="Neuron frequencies during training",
).show()
in_key_cluster = torch.isin(dynamics.neuron_best_freq, torch.tensor(key_freqs)) & (
    dynamics.neuron_frac_best_freq >= 0.85
)
print(
    f"neurons in a key-frequency cluster: {int(in_key_cluster[0].sum())} at epoch {epochs[0]}, "
    f"{int(in_key_cluster[-1].sum())} at epoch {epochs[-1]} (of {cfg.d_mlp})"
)

# %% [markdown]
# **Attention over training.** The average attention from `=` to $x$, to $y$ and to `=` itself, per head,
# averaged over all inputs. Two things to look for. *Attention to `=`*: it carries no information about the
# inputs, so we expect it to fall as the circuit forms (1.2 printed its final value). *Commutativity*: a model
# that treats $x$ and $y$ alike gives them equal attention *on average* — per head, or across heads. An
# average near $\tfrac12$ for both does not mean the attention is flat: for each input a head still splits
# its attention unevenly between $x$ and $y$ (the waves of 1.4), and the unevenness averages out. If the
# lines below hardly move, that is why; the printout gives the numbers, and also how much the attention varies
# over inputs at the analysed checkpoint.

# %%
utils.needs("dynamics", "attn_mat")
attn_lines = [dynamics.attention_to_pos[:, h, pos] for h in range(cfg.n_heads) for pos in (0, 1, 2)]
attn_labels = [f"head {h} -> {['x', 'y', '='][pos]}" for h in range(cfg.n_heads) for pos in (0, 1, 2)]
fig = utils.lines(
    attn_lines,
    x=epochs,
    labels=attn_labels,
    xaxis="epoch",
    yaxis="average attention",
    title="Average attention from = to x, y and =, per head",
)
utils.mark_phases(fig, phases).show()
gap = (dynamics.attention_to_pos[:, :, 0] - dynamics.attention_to_pos[:, :, 1]).abs()  # (n_ckpt, n_heads)
to_eq = dynamics.attention_to_pos[:, :, 2]  # (n_ckpt, n_heads)
print(
    "|attention to x - attention to y| per head, first -> last checkpoint: "
    + ", ".join(f"head {h}: {gap[0, h]:.2f} -> {gap[-1, h]:.2f}" for h in range(cfg.n_heads))
)
print(
    "attention to = per head, first -> last checkpoint: "
    + ", ".join(f"head {h}: {to_eq[0, h]:.2f} -> {to_eq[-1, h]:.2f}" for h in range(cfg.n_heads))
)
print(
    "at the analysed checkpoint, the attention to x varies over inputs with standard deviation "
    + ", ".join(f"{s:.2f}" for s in attn_mat[:, :, 0].std(0).tolist())
    + " (per head): the average hides this"
)

# %% [markdown]
# **Restricted loss.** The loss of the logits restricted to the key frequencies' trig-sum directions
# (bias-corrected, as in 2.8), on the test pairs and on the train pairs, against the model's own losses. If
# the circuit generalises before the model does, the restricted test loss falls *before* the test loss: the
# memorised part of the network still drags the full model's test loss up. The restricted *train* loss is
# the same measure on the pairs the model was trained on. If the circuit is a general algorithm it should not
# care which pairs it was trained on, so we expect the two restricted losses to stay close to each other,
# while the model's own train loss sits far below both until cleanup. The printout gives the epochs at which
# each falls below 1 and how far apart the two restricted losses get.

# %%
utils.needs("dynamics")
fig = utils.lines(
    [dynamics.test_loss, dynamics.restricted_loss_test, dynamics.restricted_loss_train, dynamics.train_loss],
    x=epochs,
    labels=["test loss", "restricted loss (test pairs)", "restricted loss (train pairs)", "train loss"],
    log_y=True,
    xaxis="epoch",
    yaxis="loss",
    title="Restricted loss vs test loss",
)
utils.mark_phases(fig, phases).show()
for name, values in [
    ("test loss", dynamics.test_loss),
    ("restricted loss (test pairs)", dynamics.restricted_loss_test),
    ("restricted loss (train pairs)", dynamics.restricted_loss_train),
]:
    print(f"{name:>30} first below 1 at checkpoint epoch {first_epoch_below(epochs, values.numpy(), 1.0)}")
print(
    f"(checkpoints every {stride * checkpoint_gap} epochs here; the test loss itself is recorded every "
    f"{run_cfg.test_every} epochs, so the epochs printed in Setup and 3.2 are finer)"
)
restricted_gap = (dynamics.restricted_loss_train / dynamics.restricted_loss_test).log10().abs()
print(
    f"restricted train / test loss: within a factor {10 ** restricted_gap.median().item():.2f} at the median checkpoint, "
    f"{10 ** restricted_gap.max().item():.2f} at worst"
)
fig = utils.line(
    dynamics.restricted_loss_ratio,
    x=epochs,
    log_y=True,
    xaxis="epoch",
    yaxis="ratio",
    title="Restricted loss / test loss (test pairs)",
)
utils.mark_phases(fig, phases).show()

# %% [markdown]
# **Weight norm.** The sum of squared weights, in total and per parameter. Weight decay pushes it down all the
# time; fitting the training set pushes it up. The paper's picture for its run: the norm grows early
# (memorising a lookup table takes large weights), falls while the circuit forms — weight decay trades
# memorising weights for the cheaper Fourier circuit, which fits the same training pairs with a smaller
# norm — keeps falling through cleanup, and levels off at the norm of the circuit alone. How closely a given
# run follows it varies: where the peak falls (it can come well before the end of memorisation) and whether
# cleanup is steeper than circuit formation. The printout gives this run's peak and its rate of change in each
# phase; read the story off those numbers, not off the paper's.

# %%
utils.needs("dynamics")
fig = utils.line(
    dynamics.total_sum_sq_weights,
    x=epochs,
    xaxis="epoch",
    yaxis="sum of squared weights",
    title="Total sum of squared weights",
)
utils.mark_phases(fig, phases).show()
fig = utils.lines(
    dynamics.sum_sq_weights.T,
    x=epochs,
    labels=dynamics.param_names,
    log_y=True,
    xaxis="epoch",
    yaxis="sum of squared weights",
    title="Sum of squared weights per parameter",
)
utils.mark_phases(fig, phases).show()
peak_index = int(dynamics.total_sum_sq_weights.argmax())
print(
    f"sum of squared weights: {dynamics.total_sum_sq_weights[0]:.0f} at epoch {epochs[0]}, "
    f"peak {dynamics.total_sum_sq_weights[peak_index]:.0f} at epoch {epochs[peak_index]}, "
    f"{dynamics.total_sum_sq_weights[-1]:.0f} at epoch {epochs[-1]}"
)


def norm_at(epoch: float) -> float:
    return dynamics.total_sum_sq_weights[int(np.abs(epochs - epoch).argmin())].item()


for name, start, end in phases:
    change = norm_at(end) - norm_at(start)
    print(
        f"{name:>18} (epochs {start:.0f}-{end:.0f}): {norm_at(start):.0f} -> {norm_at(end):.0f} "
        f"({'+' if change >= 0 else ''}{change:.0f}, {change / max(end - start, 1) * 1000:+.1f} per 1000 epochs)"
    )
if phases:
    print(
        f"{'after cleanup':>18} (epochs {phases[-1][2]:.0f}-{epochs[-1]:.0f}): {norm_at(phases[-1][2]):.0f} -> {norm_at(epochs[-1]):.0f}"
    )

# %% [markdown]
# **Sparsity in the Fourier basis.** The Gini coefficient of the per-frequency Fourier norms of `W_E` and of
# `W_logit` (0: spread evenly over all frequencies, close to 1: concentrated on a few). Both rise as the model
# settles on its key frequencies (printed: first and last value).

# %%
utils.needs("dynamics")
fig = utils.lines(
    [dynamics.gini_embed, dynamics.gini_logit],
    x=epochs,
    labels=["W_E", "W_logit"],
    xaxis="epoch",
    yaxis="Gini coefficient",
    title="Fourier sparsity of W_E and W_logit",
)
utils.mark_phases(fig, phases).show()
print(
    f"Gini of W_E: {dynamics.gini_embed[0]:.2f} -> {dynamics.gini_embed[-1]:.2f}; "
    f"of W_logit: {dynamics.gini_logit[0]:.2f} -> {dynamics.gini_logit[-1]:.2f}"
)

# %% [markdown]
# ### Recap of Section 3
#
# * The grokking curve splits into memorisation, circuit formation and cleanup (here read off the test loss).
# * The **excluded loss** shows the model relying on its key frequencies to fit the *training* set before the
#   test loss moves; your own `excl_loss`, `fourier_embed` and `embed_SVD` reproduce the engine's curves.
# * The embedding concentrates on the key frequencies (Fourier norms, singular values, Gini coefficients).
# * The trig-sum share grows in the post-activations and the logits; the pre-activations hold some (attention
#   makes a few products), far less than after the ReLU.
# * The **restricted loss** can fall before the test loss — the circuit generalises before the whole model
#   does; the summary below checks whether it does in this run.
# * Weight decay shrinks the weights as the circuit replaces memorisation; the weight-norm printout says when this
#   run's norm peaks and how fast it falls in each phase.

# %% [markdown]
# ### Summary: what this run shows
#
# Every claim of this notebook, checked on the model you loaded (✅ holds, ❌ does not hold for this run).

# %% tags=["summary"]
utils.needs("key_freqs", "trig_loss", "final_excl", "cluster_ablation", "form_variants", "top_share", "dynamics")
frac_explained = n_explained / cfg.d_mlp
checks = [
    (
        groks,
        f"the model groks: train loss < 1e-2 at epoch {epoch_train_small}, test loss < 1e-2 at epoch {epoch_test_small}",
    ),
    (
        2 <= len(key_freqs) <= 8,
        f"it uses a handful of key frequencies: {key_freqs} (the embedding carries {embed_freqs})",
    ),
    (
        frac_explained > 0.5,
        f"{frac_explained:.1%} of the neurons are explained >= 85% by one frequency; clusters "
        f"{ {k: len(v) for k, v in clusters.items()} }",
    ),
    (
        trig_loss <= original_loss.item(),
        f"keeping only the cos/sin(w_k(x+y)) directions does not raise the loss: "
        f"{trig_loss:.3e} vs {original_loss.item():.3e}",
    ),
    (
        min(final_excl) > 100 * final_train_loss,
        f"the excluded loss ends far above the train loss: {min(final_excl):.2e} or more vs {final_train_loss:.2e}",
    ),
    (
        cluster_ablation[most_important] > 100 * original_loss.item(),
        f"ablating the most important cluster (frequency {most_important}) raises the loss "
        f"{cluster_ablation[most_important] / original_loss.item():.1e}-fold",
    ),
    (
        symmetric_enough,
        f"the neurons are nearly symmetric in x and y: median antisymmetric share {anti_post.median():.2%} (< 5%)",
    ),
    (
        bool((form_variants["+ direct path"] - original_logits).abs().max() < 1e-3 * original_logits.abs().max()),
        "the functional form with every left-out term added back reproduces the model's logits",
    ),
    (
        interaction_post_all > 2 * interaction_pre_all,
        f"the ReLU at least doubles the share of x·y product terms: {interaction_pre_all:.1%} before, {interaction_post_all:.1%} after",
    ),
    (
        top_share.min().item() > 0.9,
        f"W_logit's top {len(top_share)} right-singular directions lie >= 90% in the key "
        f"frequencies' cos/sin(w z): {top_share.min():.1%} or more",
    ),
]
restricted_below_1 = first_epoch_below(epochs, dynamics.restricted_loss_test.numpy(), 1.0)
test_below_1 = first_epoch_below(epochs, dynamics.test_loss.numpy(), 1.0)
if restricted_below_1 is not None and test_below_1 is not None:
    checks.append(
        (
            restricted_below_1 <= test_below_1,
            f"the restricted test loss falls below 1 no later than the test loss "
            f"(epoch {restricted_below_1} vs {test_below_1})",
        )
    )
if any(name == "cleanup" for name, _, _ in phases):
    _, start, end = next(ph for ph in phases if ph[0] == "cleanup")
    checks.append(
        (
            norm_at(end) < norm_at(start),
            f"the weight norm falls during cleanup: {norm_at(start):.0f} -> {norm_at(end):.0f}",
        )
    )
if "svd_gap" in globals():  # set by 3.5 once your three functions ran on every checkpoint it picked
    checks.append(
        (
            log_gap < 0.01 and embed_gap < 1e-3 * dynamics.fourier_embed.max().item() and svd_gap < 1e-3,
            "your excl_loss, fourier_embed and embed_SVD agree with the batched engine over training",
        )
    )
print(f"p = {p}, analysed checkpoint: epoch {ANALYSED_EPOCH} ({full_run_data.source})")
for ok, claim in checks:
    print("✅" if ok else "❌", claim)
print("phases:", ", ".join(f"{name} {start:.0f}-{end:.0f}" for name, start, end in phases))

# %% [markdown]
# # Bonus: why this matters, follow-ups and experiments
#
# **Why this matters for alignment.** We will want to know what large models have learned, not only how they
# score. This notebook is a small, complete case where that worked: a network's behaviour (a sudden jump in test
# accuracy) was explained by a mechanism found in its weights, and the mechanism in turn gave measures that saw
# the change coming long before the behaviour did. Three lessons carry over. *Sudden capabilities can have
# gradual causes*: a metric can jump while the mechanism behind it grows smoothly, so watching the right
# internal quantity can warn of a capability before it shows in evaluations. *Evaluations on the training
# distribution can hide what a model is doing*: during memorisation, the train loss looked the same whether or
# not the general circuit was there. *Reverse engineering is possible*, at least for small models: every part
# of this circuit was checked by surgery on the weights, not just read off a plot. The caveats matter just as
# much: the task is tiny and algorithmic, we knew the answer (modular addition) and could guess the tools
# (Fourier analysis), and the progress measures needed the final model first. Scaling this kind of analysis
# to models whose algorithms we cannot guess is the open problem.
#
# **Phase changes.** Grokking looks like a sudden phase change in the test loss, but the progress measures
# show continuous change underneath: the circuit forms gradually during circuit formation, and the test loss
# only collapses once cleanup removes the memorising weights that drown it out. A useful picture: both a
# memorising and a generalising solution reduce the train loss; weight decay prefers the one with the smaller
# norm, and once the generalising circuit carries the train loss, the memorisation is no longer worth its
# weight. The paper's broader point is that a phase change in a *metric* need not be a phase change in the
# *mechanism*: a well-chosen progress measure can move smoothly long before the metric jumps.
#
# **Why the delay?** With 30% of the data, memorising is the quickest way to reduce the train loss. The
# generalising circuit needs several parts (embedding waves, neurons multiplying them, `W_logit` reading the
# products) to line up before it helps at all — and each part is only rewarded once the others exist.
# Weight decay matters: without it, the paper's model at 30% data does not grok.
#
# **What the progress measures show — and what they do not.** The excluded and restricted losses are defined
# *using the algorithm we found in the final model* (its key frequencies, its trig-sum directions). They show
# that this particular mechanism forms early and gradually; they would not reveal a different mechanism the
# model tried and abandoned, and they need the final model's answer before they can be computed at all. They
# are evidence for *this* circuit in *this* run, not a general detector of generalisation.
#
# **Limitations.** This is one small model on one algorithmic task, with a full-batch optimiser, and the
# mechanism was found by hand. The frequencies a model picks depend on the seed, and details (how many
# frequencies, the exact phase boundaries) vary from run to run — which is why this notebook computes them
# instead of quoting them. The phase boundaries above are a simple rule of thumb on the test-loss curve; the
# paper defines them from the progress measures themselves.
#
# **Follow-up reading.**
#
# * Chughtai, Chan & Nanda, [*A Toy Model of Universality: Reverse Engineering How Networks Learn Group
#   Operations*](https://arxiv.org/abs/2302.03025) (2023): the same kind of circuit for composition in any
#   finite group, built from the group's representations; which representations a network learns varies from
#   run to run, which qualifies how "universal" circuits are.
# * Zhong, Liu, Tegmark & Andreas, [*The Clock and the Pizza: Two Stories in Mechanistic Explanation of
#   Neural Networks*](https://arxiv.org/abs/2306.17844) (2023): small changes to the architecture or the
#   training (e.g. how much attention is used) lead networks to a *different* algorithm for modular addition,
#   so the algorithm found here is one of several.
# * Liu, Michaud & Tegmark, [*Omnigrok: Grokking Beyond Algorithmic Data*](https://arxiv.org/abs/2210.01117)
#   (2022): explains grokking through the weight norm — generalising solutions sit at a smaller norm than the
#   large-norm initialisation — and produces grokking on non-algorithmic data by changing the initial scale.
# * Lee, Kang, Kim, Kim & Park, [*Grokfast: Accelerated Grokking by Amplifying Slow
#   Gradients*](https://arxiv.org/abs/2405.20233) (2024): treats the gradient over training steps as a signal
#   and amplifies its slow component, making grokking happen many times sooner.
# * Olsson et al., [*In-context Learning and Induction Heads*](https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html)
#   (2022): another phase change during training — induction heads form in a short window, with a visible bump
#   in the loss — explained by a circuit.
# * Power, Burda, Edwards, Babuschkin & Misra, [*Grokking: Generalization Beyond Overfitting on Small Algorithmic
#   Datasets*](https://arxiv.org/abs/2201.02177) (2022): the paper that named grokking, with many algorithmic
#   tasks and the effect of weight decay and data fraction.
#
# **Follow-up projects.** Each of these is small enough to start in this notebook with the package's trainer
# (`python -m part52_grokking_and_modular_arithmetic train --help` lists its options).
#
# * *Other tasks.* Train on subtraction, $x^2 + xy + y^2$ or a random table. Which of them grok? For
#   subtraction, which of the $x + y$ and $x - y$ terms of 2.7 does `W_logit` keep now?
# * *Other phase changes.* Find a second phase change in a small model (induction heads are the classic case)
#   and design a progress measure for it from its mechanism, as Section 3 did.
# * *Universality.* Train many seeds (the sweep below) and other groups (the Toy Model of Universality above):
#   which parts of the circuit are the same every time, and which are the run's choice?
# * *Progress measures without the final model.* Could a measure that does not know the key frequencies in
#   advance (e.g. the Gini coefficient of 3.6, or a sparsity measure of the embedding) predict grokking as early
#   as the excluded loss does?
# * *What sets the delay?* Vary the data fraction and the weight decay and measure how the grokking time
#   changes; which progress measure moves first?
# * *Other algorithms.* Change the architecture (e.g. attention that cannot depend on the inputs, as in *The
#   Clock and the Pizza*) and check whether the circuit of this notebook still appears.
#
# ## Experiment: a second model picks its own frequencies
#
# The key frequencies are not a property of modular addition: each training run picks its own. Test it here.
# The cell below trains a second model with the package's trainer (the paper's recipe) on a smaller problem —
# $p = 53$, another seed, and 70% of the pairs for training (with more data it generalises much sooner than the
# main run; the cell prints after how many epochs) — and stops as soon as its test loss is below
# $10^{-3}$. The cell prints how long it took: 12 s (811 epochs), measured on a 2-core CPU that was also running
# other work. The run is saved in `utils.cache_dir()`,
# so running the cell again loads it instantly. Then the same analysis functions as above find its key
# frequencies. (Training needs gradients, which this notebook switched off at the start: `torch.enable_grad()`
# switches them back on for the training only.)

# %% tags=["bonus-training"]
utils.needs("key_freqs")  # checked before the training: the comparison at the end uses the main model's
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.training import train as trainer

bonus_config = TrainConfig(p=53, seed=1, frac_train=0.7, epochs=3000, stop_at_test_loss=1e-3)
bonus_path = utils.cache_dir() / f"bonus_p{bonus_config.p}_seed{bonus_config.seed}_frac{bonus_config.frac_train}.pth"
bonus_path.parent.mkdir(parents=True, exist_ok=True)
t0 = time.perf_counter()
bonus_cached = bonus_path.exists()
with torch.enable_grad():
    bonus_run = trainer.train(bonus_config, out=bonus_path, progress=not IN_COLAB)
bonus_seconds = time.perf_counter() - t0
bonus_model = utils.load_model(bonus_run, -1, device=device)
bonus_epochs = len(bonus_run["train_losses"])
print(
    f"second model: p = {bonus_config.p}, seed {bonus_config.seed}, train fraction {bonus_config.frac_train}: "
    f"{bonus_epochs} epochs, final test loss {bonus_run['test_losses'][-1]:.2e} "
    f"({'loaded from' if bonus_cached and bonus_seconds < 5 else f'trained in {bonus_seconds:.1f} s, saved at'} {bonus_path})"
)

bonus_key_freqs = utils.key_frequencies(bonus_model)
bonus_surgery = utils.neuron_surgery_losses(bonus_model, bonus_key_freqs)
bonus_clusters = utils.analyse_neurons(bonus_model).clusters
print(f"its key frequencies: {bonus_key_freqs}; cluster sizes { {k: len(v) for k, v in bonus_clusters.items()} }")
print(
    f"its loss {bonus_surgery['original']:.2e}; keeping only the cos/sin(w_k(x+y)) directions of its key frequencies: "
    f"{bonus_surgery['restricted']:.2e}"
)
print(f"the main model (p = {p}): key frequencies {key_freqs}")
as_fraction = lambda freqs, modulus: sorted(round(k / modulus, 3) for k in freqs)  # noqa: E731
print(
    f"as fractions of a full turn per step, k / p: main {as_fraction(key_freqs, p)}, second {as_fraction(bonus_key_freqs, bonus_config.p)}"
)
print(
    "The two models use different frequencies: the algorithm is the same, the frequencies are the run's own choice."
    if as_fraction(key_freqs, p) != as_fraction(bonus_key_freqs, bonus_config.p)
    else "The two models happen to use the same frequencies (as fractions of p)."
)

# %% [markdown]
# Questions to explore with this cell: does the second model's restricted loss beat its own loss, as in 2.8?
# How many key frequencies does it use — more or fewer than the main model, with a smaller $p$? Change the
# seed (the file name includes it, so each run is kept): do the frequencies change every time?
#
# ## Experiment: a sweep over seeds (universality)
#
# One second model is an anecdote. The package's `sweep` module trains a grid of runs — here several seeds
# with the recipe of the cell above — together (its batched trainer trains the runs as one set of tensors),
# writes each run to its own run file in a folder of `utils.cache_dir()` (`bonus_sweep_p53/`), and then
# summarises the folder: for every run, the epoch its test loss first fell below $10^{-2}$, its final losses,
# and the key frequencies of its last checkpoint, found with the same `key_frequencies` as above. On a CPU
# the cell trains four more seeds, 2 to 5 (seed 1 is the model above): 93 s the first time, measured on a 2-core
# CPU that was also running other work; then the files are loaded in a second. Where there is a GPU it trains 16 seeds at two train fractions
# instead, so the figure's phase diagram has two cells. The same sweep runs from the command line and can be
# spread over many machines (README, "Sweeps").

# %% tags=["bonus-training"]
utils.needs("bonus_run")  # the experiment above first: its model is seed 1 of this sweep
from collections import Counter

from part52_grokking_and_modular_arithmetic.training import sweep

BIG_SWEEP = device == "cuda"  # a GPU trains the bigger sweep in about the time a CPU needs for the small one
sweep_configs = sweep.sweep_grid(
    TrainConfig(p=53, frac_train=0.7, epochs=3000, stop_at_test_loss=1e-3),
    seeds=range(16) if BIG_SWEEP else range(2, 6),
    frac_trains=[0.5, 0.7] if BIG_SWEEP else [0.7],
)
sweep_dir = utils.cache_dir() / "bonus_sweep_p53"
t0 = time.perf_counter()
with torch.enable_grad():
    sweep.run_sweep(sweep_configs, sweep_dir, device=device, progress=not IN_COLAB)
print(f"{len(sweep_configs)} runs ready in {time.perf_counter() - t0:.1f} s\n")

sweep_table = sweep.sweep_summary(sweep_dir)
print(sweep_table.format_table())
sweep_grokked = [r for r in sweep_table.rows if r["grok_epoch"] is not None]
sweep_freq_sets = {tuple(r["key_freqs"]) for r in sweep_grokked}
sweep_freq_counts = Counter(k for r in sweep_grokked for k in r["key_freqs"])
print(
    f"\n{len(sweep_grokked)} of {len(sweep_table.rows)} runs generalised; between them they use "
    f"{len(sweep_freq_sets)} different sets of key frequencies."
)
print("how many of them use each frequency:", dict(sorted(sweep_freq_counts.items())))
sweep.sweep_figure(sweep_table).show()

# %% [markdown]
# Read the table: if the runs that generalised list different key frequencies, then the algorithm is shared
# but the frequencies are an accident of the seed (initialisation and split). Questions: do any two seeds agree
# on all their frequencies? Is there a frequency that (nearly) every run uses, and what fraction of a turn
# is it, $k/p$? Does the number of key frequencies relate to how quickly a run generalises (the `grok`
# column)?
