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
# A one-layer transformer is trained to compute $(x + y) \bmod p$ for $p = 113$ on 30% of all input pairs.
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
# * **Bonus** — discussion and follow-ups.
#
# **How to use this notebook.** Most exercises are functions with a docstring and a
# `raise NotImplementedError()` for you to replace; a few ask you to compute some variables, which start out as
# `None`. The cell after each exercise runs its grader (`tests.test_...`), which compares your answer with the
# reference solution and tells you what differs (or that you have not started yet). Questions have their answer folded away in
# an "Answer" box: think first, then open it. Every number quoted in the text below is computed from the model
# you load, so it holds whether you use the course's published model or one you trained yourself.

# %% [markdown]
# ## Setup
#
# The first cell installs the course package when it is missing (e.g. on Colab). When the package is already
# installed — locally, or in CI — it does nothing.

# %%
import sys

try:
    import part52_grokking_and_modular_arithmetic  # noqa: F401  (installed: nothing to do)
except ImportError:
    import subprocess

    # Colab or a fresh environment: install the course package and its dependencies from the course repository.
    COURSE_REPO_URL = "https://github.com/YOUR-ORG/part52_grokking_and_modular_arithmetic"  # placeholder: the course repository
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"git+{COURSE_REPO_URL}"], check=True)

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

# TransformerLens 3.x warns at every model construction; that warning is not about your code.
utils.silence_transformer_lens_deprecation()
warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")

# Plotly: "plotly_mimetype" is drawn offline by JupyterLab, Notebook 7 and VS Code (with their bundled
# plotly.js) and is what the HTML report converts; Colab needs its own renderer.
IN_COLAB = "google.colab" in sys.modules
pio.renderers.default = "colab" if IN_COLAB else "plotly_mimetype"

# Everything in this notebook is analysis: no gradients needed.
torch.set_grad_enabled(False)
device = "cpu"

# %% [markdown]
# ### The model and its training history
#
# `utils.load_full_run_data()` returns the **checkpoint history** of a training run: the weights every 100
# epochs (`state_dicts`, `epochs`), the train loss at every epoch and the test loss at every test interval. It
# uses a cached copy when there is one, else downloads the course's published run from the Hugging Face hub,
# else trains the model locally (which takes a while on a CPU — the progress bar tells you how long).
#
# The architecture (the config below) is the paper's: one layer, 4 attention heads of size 32, an MLP of 512
# ReLU neurons, no LayerNorm, learned positional embeddings, untied embedding and unembedding. The input is the
# sequence `[x, y, =]`, where `=` is token number `p`, and the answer is read from the logits at the last
# position.

# %%
t0 = time.perf_counter()
full_run_data = utils.load_full_run_data()
print(f"Loaded the checkpoint history in {time.perf_counter() - t0:.1f} s from {full_run_data['source']}")

run_cfg = utils.run_config(full_run_data)  # the recipe of this run (the hub file's is the paper's)
p, fn, frac_train, seed = run_cfg.p, run_cfg.fn, run_cfg.frac_train, run_cfg.seed
assert fn == "add", f"this notebook studies modular addition; the loaded run learned {fn!r}"

checkpoint_epochs = [int(e) for e in full_run_data["epochs"]]
# The course's published run is analysed at epoch 40,000 (it trained for 50,000); other runs at their last checkpoint.
analysed_index = utils.analysed_checkpoint_index(full_run_data)
ANALYSED_EPOCH = checkpoint_epochs[analysed_index]

model = utils.load_model(full_run_data, analysed_index, device=device)  # a HookedTransformer
model.eval()
cfg = model.cfg

print(f"p = {p}, task: (x + y) mod p, train fraction {frac_train}, split seed {seed}")
print(f"{len(checkpoint_epochs)} checkpoints, epochs {checkpoint_epochs[0]} ... {checkpoint_epochs[-1]}; analysing epoch {ANALYSED_EPOCH}")
print(f"model: {cfg.n_layers} layer, d_model {cfg.d_model}, {cfg.n_heads} heads x {cfg.d_head}, d_mlp {cfg.d_mlp}, d_vocab {cfg.d_vocab}")

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
all_data = utils.make_all_data(p).to(device)  # (p^2, 3): rows [x, y, p]
labels = utils.make_labels(all_data, p, fn=fn).to(device)  # (p^2,): (x + y) mod p
train_indices, _ = utils.train_test_split(p, frac_train, seed)  # the paper's split for this fraction and seed
if "train_indices" in full_run_data:  # our own runs store the split they trained on: it must be the same one
    assert set(torch.as_tensor(full_run_data["train_indices"]).tolist()) == set(train_indices.tolist()), "unexpected split"

original_logits, cache = model.run_with_cache(all_data)
original_logits = original_logits[:, -1, :-1]  # (p^2, p): last position, `=` logit dropped
original_loss = utils.cross_entropy_high_precision(original_logits, labels)

test_logits = functools.partial(utils.test_logits, fn=fn, frac_train=frac_train, seed=seed)

accuracy = (original_logits.argmax(-1) == labels).float().mean().item()
print(f"original loss on all {p * p} pairs: {original_loss.item():.3e}   accuracy: {accuracy:.2%}")
print(f"train loss: {test_logits(original_logits, mode='train'):.3e}   test loss: {test_logits(original_logits, mode='test'):.3e}")

# %% [markdown]
# Did this model grok? Its training history says: the train loss became small early, the test loss only much
# later.

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
print("The model groks: it generalises long after it has fitted the training set." if groks else
      "Warning: this run does not show grokking (the test loss never fell far behind the train loss).")

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

print("W_E", tuple(W_E.shape), " W_U", tuple(W_U.shape), " W_Q", tuple(W_Q.shape), " W_O", tuple(W_O.shape), " W_in", tuple(W_in.shape))

# %% [markdown]
# # Section 1: Periodicity & the Fourier basis
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
# Hint: `cache["pattern", 0]` has shape `(batch, head, query_pos, key_pos)`; `cache["post", 0]` and
# `cache["pre", 0]` have shape `(batch, pos, d_mlp)`.

# %%
### BEGIN SOLUTION
attn_mat = cache["pattern", 0][:, :, -1, :]
neuron_acts_post = cache["post", 0][:, -1, :]
neuron_acts_pre = cache["pre", 0][:, -1, :]
### END SOLUTION

# %%
tests.test_cache_activations(attn_mat, neuron_acts_post, neuron_acts_pre, cache)

# %%
print("attn_mat", tuple(attn_mat.shape), " neuron_acts_post", tuple(neuron_acts_post.shape))

# %% [markdown]
# ## 1.2 Questions about the model
#
# Before computing anything else, think about what the model *has* to do. A few facts help:

# %%
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
# The direct path at the last position only sees `=`, so it can only add a constant to the logits. Attention
# outputs are (weighted) sums of functions of $x$ and of $y$ separately, so the attention-only path cannot
# compute anything that needs $x$ and $y$ *together*, like $x + y$. The work of combining them must happen in
# the MLP, whose nonlinearity can multiply things together.
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

# %% [markdown]
# ## 1.3 The functional form of the model
#
# Let $t_0, t_1$ be the embeddings of $x$ and $y$ (plus their positional embeddings) and $t_2$ that of `=`.
# Suppose the `=` query attends only to positions 0 and 1 (we just saw that attention to `=` is negligible).
# Then head $h$ computes attention weights from the scores $s_{h,i} = t_2^T W_Q^h {W_K^h}^T t_i / \sqrt{d_{head}}$:
#
# $$\alpha_h = \frac{e^{s_{h,0}}}{e^{s_{h,0}} + e^{s_{h,1}}} = \sigma(s_{h,0} - s_{h,1}),$$
#
# a sigmoid of a *difference* of two scores, one depending only on $x$ and one only on $y$. The residual stream
# at the last position after attention is
#
# $$r = t_2 + \sum_h \big(\alpha_h t_0 + (1 - \alpha_h) t_1\big)^T W_V^h W_O^h,$$
#
# and the MLP neurons are $\mathrm{ReLU}(r^T W_{in} + b_{in})$. Writing $W_{neur}^h = W_V^h W_O^h W_{in}$
# (after the embedding, $W_E W_V^h W_O^h W_{in}$), and dropping the constant $t_2$ term and the bias, the
# neurons are
#
# $$\text{neurons} = \mathrm{ReLU}\Big(\sum_h \big(\alpha_h t_0 + (1 - \alpha_h) t_1\big)^T W_{neur}^h\Big),$$
#
# and, with $W_{logit} = W_{out} W_U$, the logits are $\text{neurons}^T W_{logit}$ (plus the small direct
# paths). So the model is fully described by three **effective weight** matrices:
#
# * $W_{logit} = W_{out} W_U$, shape $(d_{mlp}, p)$: how each neuron pushes each output logit;
# * $W_{neur} = W_E W_V W_O W_{in}$, shape $(n_{heads}, p, d_{mlp})$: what each token contributes to each neuron
#   through each head;
# * $W_{attn} = t_2^T W_Q W_K^T W_E^T / \sqrt{d_{head}}$, shape $(n_{heads}, p)$: the attention score each head's
#   `=` query gives each token (using `final_pos_resid_initial` for $t_2$).
#
# **Exercise — compute the effective weights** `W_logit`, `W_neur` and `W_attn` from the helper variables.
# Beware of `.T` on a 3-D tensor: it reverses *all* axes; and of `@` between a `(head, d)` matrix and a
# `(head, d, e)` stack, which pairs every head with every other head. `einops.einsum` with named axes avoids
# both traps.

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
print("W_logit", tuple(W_logit.shape), " W_neur", tuple(W_neur.shape), " W_attn", tuple(W_attn.shape))

# %% [markdown]
# ## 1.4 Everything is periodic
#
# Plot the attention paid to $x$ by each head, over the $(x, y)$ grid: striking waves.

# %%
utils.inputs_heatmap(
    attn_mat[:, :, 0],
    facet_labels=[f"head {h}" for h in range(cfg.n_heads)],
    title="Attention from = to x, for every input (x, y)",
).show()

# %% [markdown]
# The neurons look periodic too — here the first five, after the ReLU:

# %%
utils.inputs_heatmap(
    neuron_acts_post[:, :5],
    facet_labels=[f"neuron {i}" for i in range(5)],
    title="Post-ReLU activations of the first 5 neurons",
).show()

# %% [markdown]
# And so are the effective weights, as functions of the input token: the attention scores `W_attn` per head,
# and a few neurons' input weights `W_neur` through head 0.

# %%
utils.line(W_attn, labels=[f"head {h}" for h in range(cfg.n_heads)], xaxis="token", yaxis="attention score",
           title="W_attn: the = query's score for each token").show()
utils.line(W_neur[0, :, :5].T, labels=[f"neuron {i}" for i in range(5)], xaxis="token", yaxis="contribution",
           title="W_neur (head 0): input weights of the first 5 neurons").show()

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
# `["const", "cos 1", "sin 1", ..., f"cos {(p-1)//2}", f"sin {(p-1)//2}"]`.


# %%
def make_fourier_basis(p: int) -> tuple[Float[Tensor, "p p"], list[str]]:
    """Return the (p, p) orthonormal Fourier basis (rows = basis vectors) and the name of each row."""
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
fourier_basis, fourier_basis_names = make_fourier_basis(p)
utils.line(fourier_basis[:7], labels=fourier_basis_names[:7], xaxis="x", title="The first 7 Fourier basis vectors").show()
utils.imshow_div(fourier_basis @ fourier_basis.T, title="fourier_basis @ fourier_basis.T is the identity").show()

# %% [markdown]
# **Exercise — `fft1d(x)`.** Express a tensor in the Fourier basis along its **last** dimension (any number of
# leading dimensions). Because the basis is orthonormal, the coefficients are just dot products with the rows:
# $\hat{v}_i = \sum_x F_{i x} v_x$.


# %%
def fft1d(x: Float[Tensor, "... p"]) -> Float[Tensor, "... p"]:
    """Coefficients of x in the Fourier basis along its last dimension (of size p)."""
    ### BEGIN SOLUTION
    basis, _ = make_fourier_basis(x.shape[-1])
    return x @ basis.to(x).T
    ### END SOLUTION


# %%
tests.test_fft1d(fft1d, p)

# %% [markdown]
# A sum of three basis vectors has exactly three non-zero coefficients:

# %%
v = fourier_basis[4] + fourier_basis[15] + fourier_basis[67]
utils.line(fft1d(v), hover=fourier_basis_names, xaxis="Fourier component", yaxis="coefficient",
           title=f"fft1d of {fourier_basis_names[4]} + {fourier_basis_names[15]} + {fourier_basis_names[67]}").show()
print("non-zero coefficients:", [fourier_basis_names[i] for i in torch.nonzero(fft1d(v).abs() > 1e-4).flatten().tolist()])

# %% [markdown]
# Functions of *two* inputs $(x, y)$ live in $\mathbb{R}^{p \times p}$, and the products of a basis vector in
# $x$ and one in $y$, $F_i(x) F_j(y)$, form an orthonormal basis of it: the **2D Fourier basis**.
#
# **Exercise — `fourier_2d_basis_term(i, j)`.** Return the $(p, p)$ grid of $F_i(x) F_j(y)$ indexed `[x, y]`
# (use the `fourier_basis` computed above).


# %%
def fourier_2d_basis_term(i: int, j: int) -> Float[Tensor, "p p"]:
    """The 2D basis function F_i(x) F_j(y) as a (p, p) grid indexed [x, y]."""
    ### BEGIN SOLUTION
    return fourier_basis[i][:, None] * fourier_basis[j][None, :]
    ### END SOLUTION


# %%
tests.test_fourier_2d_basis_term(fourier_2d_basis_term, p)

# %%
utils.inputs_heatmap(
    torch.stack([fourier_2d_basis_term(i, j) for i, j in [(1, 0), (3, 3), (4, 7)]], dim=-1),
    facet_labels=[f"{fourier_basis_names[i]} (x) * {fourier_basis_names[j]} (y)" for i, j in [(1, 0), (3, 3), (4, 7)]],
    title="Three 2D Fourier basis terms",
).show()

# %% [markdown]
# **Exercise — `fft2d(tensor)`.** Transform a tensor of shape $(p, p, \dots)$ — the first two axes being $x$
# and $y$ — into the 2D Fourier basis: $\hat{T}_{ij\dots} = \sum_{x,y} T_{xy\dots} F_{ix} F_{jy}$. Any number
# of trailing dimensions (e.g. one per neuron). `einops.einsum` makes this a one-liner.


# %%
def fft2d(tensor: Float[Tensor, "p p ..."]) -> Float[Tensor, "p p ..."]:
    """2D Fourier transform over the first two (x, y) dimensions."""
    ### BEGIN SOLUTION
    basis, _ = make_fourier_basis(tensor.shape[0])
    basis = basis.to(tensor)
    return einops.einsum(tensor, basis, basis, "px py ..., i px, j py -> i j ...")
    ### END SOLUTION


# %%
tests.test_fft2d(fft2d, p)

# %%
example = fourier_2d_basis_term(4, 6) + fourier_2d_basis_term(14, 46) / 3 + fourier_2d_basis_term(97, 100) * 2
utils.imshow_fourier(fft2d(example), title="fft2d of a sum of three 2D basis terms: three cells").show()

# %% [markdown]
# ## 1.6 Activations in the Fourier basis
#
# Now look at the attention to $x$ and at the neurons in the 2D Fourier basis. (The axes are labelled with
# the basis names: row = component in $x$, column = component in $y$.) We subtract each map's mean first:
# that only removes the constant term `[const, const]`, which would otherwise dwarf everything else. The maps
# are big — zoom into the top-left corner and along the first row and column.

# %%
attn_to_x = einops.rearrange(attn_mat[:, :, 0], "(x y) head -> x y head", x=p)
utils.imshow_fourier(fft2d(attn_to_x - attn_to_x.mean((0, 1))), facet_labels=[f"head {h}" for h in range(cfg.n_heads)],
                     facet_col_wrap=2, height=1000, title="Attention to x in the 2D Fourier basis (mean removed)").show()
neurons_grid = einops.rearrange(neuron_acts_post[:, :4], "(x y) neuron -> x y neuron", x=p)
utils.imshow_fourier(fft2d(neurons_grid - neurons_grid.mean((0, 1))), facet_labels=[f"neuron {i}" for i in range(4)],
                     facet_col_wrap=2, height=1000, title="The first 4 neurons in the 2D Fourier basis (mean removed)").show()

# %% [markdown]
# **Exercise — spot the pattern.** Which cells light up? Zoom in on the figures.
#
# <details><summary>Answer</summary>
#
# The pictures are **sparse**. The attention is mostly a constant plus a few terms that depend on only one of
# the inputs (the first row and first column: `const` in one input times a wave in the other). Each neuron has
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
W_neur_fourier = utils.fft1d_given_dim(W_neur, dim=1)  # (n_heads, p, d_mlp): token axis in the Fourier basis
utils.imshow_div(W_neur_fourier[0].T[:64], x=fourier_basis_names, yaxis="neuron", xaxis="Fourier component",
                 title="W_neur (head 0) in the Fourier basis, first 64 neurons").show()
utils.line(W_neur_fourier.pow(2).sum(-1).sqrt(), x=None, hover=fourier_basis_names,
           labels=[f"head {h}" for h in range(cfg.n_heads)], xaxis="Fourier component", yaxis="norm over neurons",
           title="Norm of each Fourier component of W_neur, per head").show()
utils.line(fft1d(W_attn), hover=fourier_basis_names, labels=[f"head {h}" for h in range(cfg.n_heads)],
           xaxis="Fourier component", title="W_attn in the Fourier basis").show()

# %% [markdown]
# # Section 2: Circuits & feature analysis
#
# ## 2.1 The embedding and the key frequencies
#
# The embedding `W_E` maps each token to a vector in $\mathbb{R}^{d_{model}}$. Express its token axis in the
# Fourier basis, `fourier_basis @ W_E` $(p, d_{model})$, and take the norm of each row: the embedding only uses a
# handful of frequencies. (We sum each frequency's cos and sin, as the split between them is just a phase.)

# %%
fourier_embed_norms = (fourier_basis @ W_E).pow(2).sum(-1)  # (p,) squared norm of each component
utils.line(fourier_embed_norms.sqrt(), hover=fourier_basis_names, xaxis="Fourier component", yaxis="norm",
           title="Norm of each Fourier component of W_E").show()

embed_freq_norms = fourier_embed_norms[1::2] + fourier_embed_norms[2::2]  # (n_freqs,) frequency k at index k - 1
embed_freq_share = embed_freq_norms / embed_freq_norms.sum()
embed_freqs = [k + 1 for k in torch.nonzero(embed_freq_share > 0.02).flatten().tolist()]
print(f"frequencies carrying > 2% of the embedding's squared norm: {embed_freqs}")
print(f"together they carry {embed_freq_share[[k - 1 for k in embed_freqs]].sum():.1%} of it "
      f"({len(embed_freqs)} of {len(embed_freq_norms)} frequencies)")

# %% [markdown]
# These are candidates for the model's **key frequencies**. The embedding may keep a frequency that nothing
# downstream uses (the course's published model keeps 31 in its embedding, but its neurons use only 14, 35,
# 41, 42 and 52), so in section 2.4 we let the neurons decide.
#
# Another view of the same sparsity: the singular value decomposition $W_E = U S V^T$. Only about two singular
# values per frequency are large, and the corresponding left singular vectors (functions of the token) are
# each a cos/sin pair of one frequency.

# %%
U, S, Vh = torch.linalg.svd(W_E)
utils.line(S, xaxis="index", yaxis="singular value", title="Singular values of W_E").show()
n_big = 2 * len(embed_freqs) + 2
utils.imshow_div(fourier_basis @ U[:, :n_big], y=fourier_basis_names, xaxis="left singular vector",
                 yaxis="Fourier component", title=f"The first {n_big} left singular vectors of W_E, in the Fourier basis").show()

# %% [markdown]
# ## 2.2 Neurons: the mean squared Fourier coefficient
#
# Section 1.6 suggested each neuron is a combination of constant, linear and quadratic terms of one frequency.
# Check it for all neurons at once: centre every neuron's activations (subtract its mean over the inputs),
# transform to the 2D Fourier basis, and average the squared coefficients over neurons. (We plot the square
# root of that mean, which keeps the small terms visible next to the large ones.)

# %%
neuron_acts_centred = neuron_acts_post - neuron_acts_post.mean(0)
fourier_neuron_acts = fft2d(einops.rearrange(neuron_acts_centred, "(x y) neuron -> x y neuron", x=p))  # (p, p, d_mlp)
mean_sq_coefficient = fourier_neuron_acts.pow(2).mean(-1)
utils.imshow_fourier(mean_sq_coefficient.sqrt(), midpoint=None, color_continuous_scale="Blues", height=650,
                     title="Root mean squared 2D Fourier coefficient of the centred neurons").show()

# %% [markdown]
# Only the first row, the first column and a few 2×2 blocks on the diagonal light up — at the key frequencies.
#
# ## 2.3 Why quadratic terms? A ReLU of cosines
#
# Suppose a neuron's pre-activation is a constant plus linear terms of one frequency, $c + \cos(\omega x) +
# \cos(\omega y)$. The ReLU cuts off the negative part, and what remains is no longer a sum of functions of
# $x$ and of $y$: a product term $\cos(\omega x)\cos(\omega y)$ appears. A small regression shows it: fit
# $\mathrm{ReLU}(0.5/\sqrt{p} + F_{\cos k}(x) + F_{\cos k}(y))$ on the four unit-norm 2D terms const,
# $\cos x$, $\cos y$ and $\cos x \cos y$ (this uses no model weights at all).

# %%
fit = utils.relu_quadratic_fit(k=42, p=p)
coefs = ", ".join(f"{c:.3f}" for c in fit.coefficients.tolist())
print(f"k = 42: coefficients (const, cos x, cos y, cos x cos y) = [{coefs}]")
print(f"r^2 = {fit.r2:.3f} with the quadratic term, {fit.r2_without_quadratic:.3f} without it")
k_model = embed_freqs[0]
fit_model = utils.relu_quadratic_fit(k=k_model, p=p)
print(f"k = {k_model} (one of this model's frequencies): r^2 = {fit_model.r2:.3f} with, {fit_model.r2_without_quadratic:.3f} without")

# %% [markdown]
# The quadratic coefficient is large and the fit gets clearly better with it: a ReLU is a cheap way to multiply
# waves, and the product terms are exactly what the trig identities below need. (The numbers do not depend on
# $k$: as $p$ is prime, $x \mapsto kx \bmod p$ is a permutation of $\mathbb{Z}_p$, so the cos-$k$ wave takes the
# same values as the cos-1 wave, only in another order.)
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


# %%
def find_neuron_freqs(
    fourier_neuron_acts: Float[Tensor, "p p d_mlp"],
) -> tuple[Int[Tensor, "d_mlp"], Float[Tensor, "d_mlp"]]:
    """Return (neuron_freqs (d_mlp,) in 1..(p-1)/2, neuron_frac_explained (d_mlp,) in [0, 1])."""
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
# it; the others go to cluster $-1$. The **key frequencies** are those with a real cluster (at least 2% of the
# neurons).

# %%
neuron_freqs, neuron_frac_explained = find_neuron_freqs(fourier_neuron_acts)
clusters = utils.neuron_clusters(neuron_freqs, neuron_frac_explained, threshold=0.85)  # {freq: neuron indices}
key_freqs = utils.key_frequencies(clusters=clusters, d_mlp=cfg.d_mlp)
n_explained = sum(len(idx) for k, idx in clusters.items() if k != -1)

print(f"key frequencies (from the neuron clusters): {key_freqs}")
print(f"frequencies the embedding carries: {embed_freqs}"
      + (f" (not used by the neurons: {sorted(set(embed_freqs) - set(key_freqs))})" if set(embed_freqs) - set(key_freqs) else ""))
print("cluster sizes:", {k: len(idx) for k, idx in clusters.items()})
print(f"neurons explained >= 85% by one frequency: {n_explained} of {cfg.d_mlp} = {n_explained / cfg.d_mlp:.1%}")

# %% [markdown]
# The neurons that no frequency explains (cluster $-1$) are mostly neurons that fire on almost every input: for
# them the ReLU is nearly the identity, so they are close to *linear* in their pre-activation, which is a sum of
# functions of $x$ and $y$ of several frequencies. The scatter plot shows each neuron's frequency against the
# fraction explained, coloured by the fraction of inputs on which it fires.

# %%
fire_frac = (neuron_acts_post > 0).float().mean(0)
utils.scatter(neuron_freqs, neuron_frac_explained, color=fire_frac, color_label="fires on",
              hover=[f"neuron {i}" for i in range(cfg.d_mlp)], xaxis="neuron frequency", yaxis="fraction explained",
              title="Each neuron's best frequency and how much of it that frequency explains").show()
unclustered = clusters.get(-1, torch.zeros(0, dtype=torch.long))
print(f"cluster -1: {len(unclustered)} neurons, firing on {fire_frac[unclustered].mean():.1%} of inputs on average "
      f"(clustered neurons: {fire_frac[neuron_frac_explained >= 0.85].mean():.1%})")

# %% [markdown]
# ## 2.5 Projections: how much of the model is the Fourier story?
#
# If every clustered neuron really is its frequency's 3×3 block, we can replace each neuron by its projection
# onto that block and the model should still work.
#
# **Exercise — `project_onto_direction(batch_vecs, v)`.** Project every column of `batch_vecs` $(n, \dots)$
# onto the direction `v` $(n,)$ along the first (batch) axis. Assume `v` has unit norm; do not normalise it.
#
# **Exercise — `project_onto_frequency(batch_vecs, freq)`.** `batch_vecs` has a batch axis of size $p^2$ (one
# row per input, index $x p + y$). Project onto the span of the nine 2D basis terms of frequency `freq`'s block.
# The terms are orthonormal, so the projection is the sum of the nine projections.


# %%
def project_onto_direction(batch_vecs: Float[Tensor, "batch ..."], v: Float[Tensor, "batch"]) -> Float[Tensor, "batch ..."]:
    """Project each column of batch_vecs onto the unit vector v (along the batch axis)."""
    ### BEGIN SOLUTION
    coefficients = einops.einsum(batch_vecs, v, "batch ..., batch -> ...")
    return einops.einsum(v, coefficients, "batch, ... -> batch ...")
    ### END SOLUTION


# %%
tests.test_project_onto_direction(project_onto_direction)


# %%
def project_onto_frequency(batch_vecs: Float[Tensor, "batch ..."], freq: int) -> Float[Tensor, "batch ..."]:
    """Project batch_vecs (batch axis of size p^2) onto the 9 2D Fourier terms of frequency freq's block."""
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
# cluster $-1$ neurons kept as they are, through `W_logit`. These logits leave out the direct paths and the
# output bias, which are (nearly) constant over the inputs; `bias_correction=True` adds the constant back.

# %%
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

# %% [markdown]
# The loss barely moves: the clustered neurons *are* their frequency blocks. Now the other direction:
# **ablate** one cluster at a time — remove its contribution to the logits (bias-corrected, so removing it or
# replacing it with its mean over inputs is the same) — and see how much each frequency matters.

# %%
cluster_ablation = {}
for freq in key_freqs:
    idx = clusters[freq]
    ablated = original_logits - neuron_acts_post[:, idx] @ W_logit[idx]
    cluster_ablation[freq] = test_logits(ablated, bias_correction=True, original_logits=original_logits)
    ablated_accuracy = (ablated.argmax(-1) == labels).float().mean().item()
    print(f"without the frequency-{freq} cluster ({len(idx):>3} neurons): loss {cluster_ablation[freq]:.3e} "
          f"({cluster_ablation[freq] / original_loss.item():,.0f} x the original), accuracy {ablated_accuracy:.2%}")
most_important = max(cluster_ablation, key=cluster_ablation.get)
print(f"\nThe most important cluster is frequency {most_important}: ablating it multiplies the loss by "
      f"{cluster_ablation[most_important] / original_loss.item():.1e}.")

# %% [markdown]
# Every cluster matters for the loss. The accuracies add a second view: they show whether the remaining
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
# interfere constructively, so the sum has a sharp maximum there — and using several frequencies makes that
# maximum stand out far more than any single wave could (one wave would also be large at $z$ close to $x + y$).
# </details>

# %% [markdown]
# ## 2.7 From neurons to logits
#
# How do neurons with constant, linear *and* quadratic terms produce logits with only the $\cos/\sin(\omega(x+y))$
# terms? Take the biggest cluster and compare, in the 2D Fourier basis, its neurons' activations with their
# contribution to the logits (averaged over neurons, respectively over output logits).

# %%
big_freq = max(key_freqs, key=lambda k: len(clusters[k]))
idx = clusters[big_freq]
cluster_contribution = neuron_acts_post[:, idx] @ W_logit[idx]  # (p^2, p)
cluster_contribution = cluster_contribution - cluster_contribution.mean(0)
fourier_cluster_logits = fft2d(einops.rearrange(cluster_contribution, "(x y) z -> x y z", x=p))
panels = torch.stack([fourier_neuron_acts[:, :, idx].pow(2).mean(-1), fourier_cluster_logits.pow(2).mean(-1)], dim=-1).sqrt()
panels = panels / panels.amax((0, 1), keepdim=True)
utils.imshow_fourier(panels, midpoint=None, color_continuous_scale="Blues",
                     facet_labels=[f"neurons of cluster {big_freq}", "their logit contribution"],
                     title=f"Cluster {big_freq}: root mean squared 2D Fourier coefficients (each panel scaled to max 1)").show()

# %% [markdown]
# `W_logit` keeps only the 2×2 quadratic block and throws the constant and linear terms away. Indeed,
# look at `W_logit` itself in the Fourier basis (along its output axis $z$): each neuron writes only to
# $\cos(\omega_k z)$ and $\sin(\omega_k z)$ of its own frequency.

# %%
W_logit_fourier = W_logit @ fourier_basis.T  # (d_mlp, p): output axis in the Fourier basis
order = torch.cat([clusters[k] for k in clusters])  # neurons sorted by cluster
utils.imshow_div(W_logit_fourier[order], x=fourier_basis_names, xaxis="Fourier component of the output z",
                 yaxis="neuron (sorted by cluster)", title="W_logit in the Fourier basis").show()

key_components = [i for k in key_freqs for i in (2 * k - 1, 2 * k)]
share = W_logit_fourier[:, key_components].pow(2).sum() / W_logit_fourier.pow(2).sum()
print(f"share of W_logit's squared norm in the cos/sin of the key frequencies ({len(key_components)} of {p} components): {share:.1%}")
sv = torch.linalg.svdvals(W_logit)
print(f"singular values of W_logit: {[round(s, 2) for s in sv[:2 * len(key_freqs) + 3].tolist()]} ... "
      f"-> approximately rank {2 * len(key_freqs)}")

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
# sum of two orthonormal terms: what normalises it?).


# %%
def get_trig_sum_directions(k: int) -> tuple[Float[Tensor, "p p"], Float[Tensor, "p p"]]:
    """Return (cos_dir, sin_dir): unit-norm (p, p) grids of cos(w_k (x + y)) and sin(w_k (x + y))."""
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
cos_dir, sin_dir = get_trig_sum_directions(key_freqs[0])
utils.inputs_heatmap(torch.stack([cos_dir, sin_dir], -1), facet_labels=[f"cos({key_freqs[0]}(x+y))", f"sin({key_freqs[0]}(x+y))"],
                     title="Trig-sum directions: constant along the anti-diagonals x + y = const").show()

trig_logits = torch.zeros_like(original_logits)
for k in key_freqs:
    for direction in get_trig_sum_directions(k):
        trig_logits += project_onto_direction(original_logits, direction.flatten())
trig_loss = test_logits(trig_logits, bias_correction=True, original_logits=original_logits)
print(f"original loss:                                          {original_loss.item():.3e}")
print(f"only the cos/sin(w_k (x+y)) directions of {key_freqs}: {trig_loss:.3e}")
print(f"keeping only {2 * len(key_freqs)} of {p * p} directions {'does not raise' if trig_loss <= original_loss.item() else 'raises'} the loss "
      f"(ratio {trig_loss / original_loss.item():.2f})")

# %% [markdown]
# Keeping $2K$ directions out of $p^2$ (and the constant, restored by the bias correction) gives a loss at least
# as low as the full model's: everything else in the logits is noise that only hurts. The model's algorithm is
# the trig-identity circuit, and that is *all* it needs.
#
# # Section 3: Analysis during training
#
# We know what the final model computes. How did it get there? Loading every checkpoint into a model and
# rerunning all of the above would be slow, so `utils.compute_dynamics` computes the progress measures of this
# section for every checkpoint at once (batched over checkpoints) and caches them on disk next to the run.
# The key frequencies are those of the analysed model, fixed for all checkpoints.

# %%
dynamics_cache = utils.default_run_path().with_name("training_dynamics.pt")  # next to the local run file
t0 = time.perf_counter()
stride = math.ceil(len(checkpoint_epochs) / 250)  # at most ~250 checkpoints: plenty for the plots, and quick
dynamics = utils.compute_dynamics(full_run_data, key_freqs, cache_path=dynamics_cache, final_checkpoint=analysed_index, stride=stride)
print(f"progress measures of {len(dynamics)} checkpoints (every {stride * (checkpoint_epochs[1] - checkpoint_epochs[0])} epochs) "
      f"in {time.perf_counter() - t0:.1f} s (cache: {dynamics_cache})")
epochs = dynamics.epochs.numpy()

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
def find_phases(test_epochs: np.ndarray, test_losses: np.ndarray) -> list[tuple[str, float, float]]:
    """Phases of a grokking run, as (name, start_epoch, end_epoch), derived from the test-loss curve."""
    peak = int(np.argmax(test_losses))
    end_memorisation = float(test_epochs[peak])
    after_peak = np.arange(peak, len(test_losses))
    fallen = after_peak[test_losses[after_peak] < test_losses[peak] / 10]
    end_formation = float(test_epochs[fallen[0]]) if len(fallen) else float(test_epochs[-1])
    final = np.median(test_losses[-max(1, len(test_losses) // 20):])
    settled = after_peak[(test_losses[after_peak] < 3 * final) & (test_epochs[after_peak] >= end_formation)]
    end_cleanup = float(test_epochs[settled[0]]) if len(settled) else float(test_epochs[-1])
    phases = [("memorisation", float(test_epochs[0]), end_memorisation),
              ("circuit formation", end_memorisation, end_formation),
              ("cleanup", end_formation, end_cleanup)]
    return [(name, start, end) for name, start, end in phases if end > start]


phases = find_phases(test_epochs, test_losses)
for name, start, end in phases:
    print(f"{name:>18}: epochs {start:>6.0f} - {end:>6.0f}")

# one point per test interval is plenty for a plot (the train loss is recorded every epoch)
fig = utils.lines([train_losses[np.minimum(test_epochs, len(train_losses) - 1)], test_losses], x=test_epochs, labels=["train", "test"], log_y=True,
                  xaxis="epoch", yaxis="loss", title="The grokking curve")
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
# correction). Use your functions from Section 2 and `test_logits(..., mode="train")`.


# %%
def excl_loss(model: HookedTransformer, key_freqs: list[int]) -> list[float]:
    """Train loss after removing each key frequency's cos/sin(w_k(x+y)) directions from the logits."""
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
tests.test_excl_loss(excl_loss, model, utils.key_frequencies(model), train_indices=train_indices)

# %%
final_excl = excl_loss(model, key_freqs)
final_train_loss = test_logits(original_logits, mode="train")
for k, loss in zip(key_freqs, final_excl):
    print(f"excluding frequency {k:>2}: train loss {loss:.3e}  ({loss / final_train_loss:,.0f} x the train loss {final_train_loss:.2e})")

test_starts_falling = first_epoch_below(test_epochs, test_losses, 1.0)
for k, excluded in zip(key_freqs, dynamics.excluded_loss.T):
    hurts = np.nonzero((excluded / dynamics.train_loss).numpy() > 10)[0]  # checkpoints where it costs > 10x
    print(f"excluding frequency {k:>2} first costs 10x the train loss at epoch {epochs[hurts[0]] if len(hurts) else 'never'}")
print(f"(the test loss first falls below 1 at epoch {test_starts_falling})")

fig = utils.lines(
    [dynamics.train_loss, dynamics.test_loss, *dynamics.excluded_loss.T, dynamics.excluded_loss_all_keys],
    x=epochs, labels=["train", "test", *[f"excluded {k}" for k in key_freqs], "excluded: all keys"],
    log_y=True, xaxis="epoch", yaxis="loss", title="Excluded loss (train pairs) during training",
)
utils.mark_phases(fig, phases).show()

# %% [markdown]
# At first the excluded losses track the train loss: nothing depends on the key frequencies yet. Then, one
# frequency after another, removing it starts to hurt the **train** loss — the model relies on the Fourier
# circuit to fit its training set, and (compare the epochs printed above) several frequencies do so long before
# the test loss moves. By the end, removing even one frequency costs orders of magnitude in loss.
#
# ## 3.3 The embedding's Fourier norms over training
#
# **Exercise — `fourier_embed(model)`.** Return the squared norm of each Fourier component of the embedding
# without the `=` row: express `W_E`'s token axis in the Fourier basis and sum the squares over `d_model`.
# Shape $(p,)$. Since the rows of `fourier_basis` are the basis vectors, the coefficients are
# `fourier_basis @ W_E` — multiplying by `fourier_basis.T` instead would be a mistake that still gives
# plausible-looking numbers.


# %%
def fourier_embed(model: HookedTransformer) -> Float[Tensor, "p"]:
    """Squared norm of each Fourier component (const, cos 1, sin 1, ...) of W_E without the `=` row."""
    ### BEGIN SOLUTION
    W_E = model.W_E[:-1]
    basis, _ = make_fourier_basis(W_E.shape[0])
    return (basis.to(W_E) @ W_E).pow(2).sum(1)
    ### END SOLUTION


# %%
tests.test_fourier_embed(fourier_embed, model)

# %% [markdown]
# The same quantity for every checkpoint (`dynamics.fourier_embed`), animated. Drag the slider: the key
# frequencies grow during circuit formation, and everything else decays during cleanup.

# %%
frames = np.unique(np.linspace(0, len(epochs) - 1, 40).round().astype(int))  # ~40 frames keep the figure light
utils.animate_lines(dynamics.fourier_embed[frames], hover=fourier_basis_names, frame_labels=epochs[frames],
                    animation_name="epoch", xaxis="Fourier component", yaxis="squared norm",
                    title="Fourier components of W_E during training").show()

# %% [markdown]
# ## 3.4 The embedding's singular values over training
#
# **Exercise — `embed_SVD(model)`.** Return the singular values of the embedding without the `=` *row*
# (`W_E[:-1]`, shape $(p, d_{model})$ in TransformerLens' layout), in descending order. Careful: dropping the
# last *column* instead would remove a `d_model` dimension and keep the `=` token.


# %%
def embed_SVD(model: HookedTransformer) -> Float[Tensor, "n_sv"]:
    """Singular values (descending) of W_E without the `=` row."""
    ### BEGIN SOLUTION
    return torch.linalg.svdvals(model.W_E[:-1])
    ### END SOLUTION


# %%
tests.test_embed_SVD(embed_SVD, model)

# %%
utils.animate_lines(dynamics.embed_singular_values[frames], frame_labels=epochs[frames], animation_name="epoch",
                    xaxis="index", yaxis="singular value", title="Singular values of W_E during training").show()
final_sv = dynamics.embed_singular_values[-1]
print(f"final model: {int((final_sv > 0.1 * final_sv[0]).sum())} singular values above 10% of the largest "
      f"(2 per key frequency would be {2 * len(key_freqs)})")

# %% [markdown]
# ## 3.5 More progress measures
#
# `dynamics` holds several more measures, computed the same way for every checkpoint. Each tells part of the
# story.
#
# **How much of the activations lives in the trig-sum directions?** The fraction of the centred variance of
# the neuron pre-activations, post-activations and logits that lies in the $\cos/\sin(\omega_k(x+y))$
# directions of the key frequencies.

# %%
fig = utils.lines([dynamics.trig_frac_pre, dynamics.trig_frac_post, dynamics.trig_frac_logits], x=epochs,
                  labels=["neuron pre-activations", "neuron post-activations", "logits"], xaxis="epoch",
                  yaxis="fraction of variance", title="Variance in the key frequencies' cos/sin(w(x+y)) directions")
utils.mark_phases(fig, phases).show()

# %% [markdown]
# The pre-activations are sums of functions of $x$ and of $y$ and can never contain $\cos(\omega(x+y))$: their
# fraction stays near zero. The ReLU creates the product terms, so the post-activations' fraction grows, and
# `W_logit` filters out the rest, so the logits' fraction grows most.
#
# **Neurons joining their clusters.** For every checkpoint: each neuron's best frequency and the fraction of it
# that frequency explains, coloured by how often the neuron fires. Neurons drift towards the key frequencies
# and the fraction explained rises.

# %%
utils.animate_scatter(dynamics.neuron_best_freq[frames], dynamics.neuron_frac_best_freq[frames],
                      color=dynamics.neuron_fire_frac[frames], color_label="fires on", frame_labels=epochs[frames],
                      animation_name="epoch", hover=[f"neuron {i}" for i in range(cfg.d_mlp)],
                      xaxis="best frequency", yaxis="fraction explained",
                      title="Neuron frequencies during training").show()

# %% [markdown]
# **Attention and commutativity.** The average attention from `=` to $x$ and to $y$, per head. Commutativity
# of addition shows up as equal attention to both.

# %%
attn_lines = [dynamics.attention_to_pos[:, h, pos] for h in range(cfg.n_heads) for pos in (0, 1)]
attn_labels = [f"head {h} -> {'x' if pos == 0 else 'y'}" for h in range(cfg.n_heads) for pos in (0, 1)]
fig = utils.lines(attn_lines, x=epochs, labels=attn_labels, xaxis="epoch", yaxis="average attention",
                  title="Average attention from = to x and y, per head")
utils.mark_phases(fig, phases).show()

# %% [markdown]
# **Restricted loss.** The loss of the logits restricted to the key frequencies' trig-sum directions
# (bias-corrected, as in 2.8), on the test pairs, against the model's own test loss. The restricted loss falls
# *before* the test loss: the circuit already generalises while the memorised part of the network still drags
# the full model's test loss up. Their ratio makes this visible.

# %%
fig = utils.lines([dynamics.test_loss, dynamics.restricted_loss_test, dynamics.train_loss], x=epochs,
                  labels=["test loss", "restricted loss (test pairs)", "train loss"], log_y=True, xaxis="epoch",
                  yaxis="loss", title="Restricted loss vs test loss")
utils.mark_phases(fig, phases).show()
fig = utils.line(dynamics.restricted_loss_ratio, x=epochs, log_y=True, xaxis="epoch", yaxis="ratio",
                 title="Restricted loss / test loss (test pairs)")
utils.mark_phases(fig, phases).show()

# %% [markdown]
# **Weight norm.** The sum of squared weights, in total and per parameter. Weight decay pushes it down all the
# time; memorisation pushes it up. It falls steeply during cleanup, when the memorising weights are removed.

# %%
fig = utils.line(dynamics.total_sum_sq_weights, x=epochs, xaxis="epoch", yaxis="sum of squared weights",
                 title="Total sum of squared weights")
utils.mark_phases(fig, phases).show()
fig = utils.lines(dynamics.sum_sq_weights.T, x=epochs, labels=dynamics.param_names, log_y=True, xaxis="epoch",
                  yaxis="sum of squared weights", title="Sum of squared weights per parameter")
utils.mark_phases(fig, phases).show()
peak_index = int(dynamics.total_sum_sq_weights.argmax())
print(f"sum of squared weights: {dynamics.total_sum_sq_weights[0]:.0f} at epoch {epochs[0]}, "
      f"peak {dynamics.total_sum_sq_weights[peak_index]:.0f} at epoch {epochs[peak_index]}, "
      f"{dynamics.total_sum_sq_weights[-1]:.0f} at epoch {epochs[-1]}")

# %% [markdown]
# **Sparsity in the Fourier basis.** The Gini coefficient of the per-frequency Fourier norms of `W_E` and of
# `W_logit` (0: spread evenly over all frequencies, close to 1: concentrated on a few). Both rise as the model
# settles on its key frequencies.

# %%
fig = utils.lines([dynamics.gini_embed, dynamics.gini_logit], x=epochs, labels=["W_E", "W_logit"], xaxis="epoch",
                  yaxis="Gini coefficient", title="Fourier sparsity of W_E and W_logit")
utils.mark_phases(fig, phases).show()

# %% [markdown]
# ### Summary: what this run shows
#
# Every claim of this notebook, checked on the model you loaded (✅ holds, ❌ does not hold for this run).

# %% tags=["summary"]
frac_explained = n_explained / cfg.d_mlp
checks = [
    (groks, f"the model groks: train loss < 1e-2 at epoch {epoch_train_small}, test loss < 1e-2 at epoch {epoch_test_small}"),
    (2 <= len(key_freqs) <= 8, f"it uses a handful of key frequencies: {key_freqs} (the embedding carries {embed_freqs})"),
    (frac_explained > 0.5, f"{frac_explained:.1%} of the neurons are explained >= 85% by one frequency; clusters "
                           f"{ {k: len(v) for k, v in clusters.items()} }"),
    (trig_loss <= original_loss.item(), f"keeping only the cos/sin(w_k(x+y)) directions does not raise the loss: "
                                        f"{trig_loss:.3e} vs {original_loss.item():.3e}"),
    (min(final_excl) > 100 * final_train_loss, f"the excluded loss ends far above the train loss: "
                                               f"{min(final_excl):.2e} or more vs {final_train_loss:.2e}"),
    (cluster_ablation[most_important] > 100 * original_loss.item(),
     f"ablating the most important cluster (frequency {most_important}) raises the loss "
     f"{cluster_ablation[most_important] / original_loss.item():.1e}-fold"),
]
print(f"p = {p}, analysed checkpoint: epoch {ANALYSED_EPOCH} ({full_run_data['source']})")
for ok, claim in checks:
    print("✅" if ok else "❌", claim)
print("phases:", ", ".join(f"{name} {start:.0f}-{end:.0f}" for name, start, end in phases))

# %% [markdown]
# # Bonus: discussion and follow-ups
#
# **Phase changes.** Grokking looked like a sudden phase change in the test loss, but the progress measures
# show continuous change underneath: the circuit forms gradually during circuit formation, and the test loss
# only collapses once cleanup removes the memorising weights that drown it out. A useful picture: the model
# sits on a ridge where both a memorising and a generalising solution reduce the train loss; weight decay
# prefers the cheaper (smaller-norm) generalising one, and once that solution carries the train loss, the
# memorisation is no longer worth its weight.
#
# **Why the delay?** With 30% of the data, memorising is the quickest way to reduce the train loss. The
# generalising circuit needs several parts (embedding waves, neurons multiplying them, `W_logit` reading
# the products) to line up before it helps at all — and each part is only rewarded once the others exist.
# Weight decay is crucial: without it, the model at 30% data does not grok.
#
# **Limitations.** This is one small model on one algorithmic task, with a full-batch optimiser. The
# frequencies a model picks depend on the seed, and some details (how many frequencies, the exact phase
# boundaries) vary from run to run — which is why this notebook computes them instead of quoting them. The
# phase boundaries above are a simple rule of thumb on the test-loss curve; the paper defines them from the
# progress measures themselves.
#
# **Follow-ups.**
#
# * Train on another task (`python -m part52_grokking_and_modular_arithmetic train --help` lists the options):
#   subtraction, $x^2 + xy + y^2$, or a random table. Which of them grok? What do their circuits look like?
# * Vary the fraction of training data or the weight decay, and see how the grokking time changes.
# * Find other phase changes in small models, e.g. the formation of induction heads.
# * Read "A Toy Model of Universality" (Chughtai, Chan & Nanda, 2023), which generalises this circuit to
#   group composition: models learn group representations, and which ones they learn varies between runs.
