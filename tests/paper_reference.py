"""An independent forward pass of the paper's model, written from its definition in the paper layout (not via
``layout.py``), so tests can check the layout conversion and downloaded checkpoints against it."""

import math

import torch


def paper_forward(sd: dict, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (batch, pos, d_vocab) of the paper model given a paper-layout state dict."""
    W_E = sd["embed.W_E"]  # (d_model, d_vocab)
    resid = W_E[:, tokens].permute(1, 2, 0) + sd["pos_embed.W_pos"][: tokens.shape[1]]  # (b, pos, d_model)
    W_Q, W_K, W_V = sd["blocks.0.attn.W_Q"], sd["blocks.0.attn.W_K"], sd["blocks.0.attn.W_V"]  # (h, d_head, d_model)
    n_heads, d_head, _ = W_Q.shape
    q = torch.einsum("hed,bpd->bhpe", W_Q, resid)
    k = torch.einsum("hed,bpd->bhpe", W_K, resid)
    v = torch.einsum("hed,bpd->bhpe", W_V, resid)
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) / math.sqrt(d_head)
    n = tokens.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    z = torch.einsum("bhqk,bhke->bqhe", pattern, v).reshape(tokens.shape[0], n, n_heads * d_head)  # head-major
    resid = resid + z @ sd["blocks.0.attn.W_O"].T  # W_O: (d_model, heads*d_head)
    hidden = torch.relu(resid @ sd["blocks.0.mlp.W_in"].T + sd["blocks.0.mlp.b_in"])  # W_in: (d_mlp, d_model)
    resid = resid + hidden @ sd["blocks.0.mlp.W_out"].T + sd["blocks.0.mlp.b_out"]  # W_out: (d_model, d_mlp)
    return resid @ sd["unembed.W_U"]  # W_U: (d_model, d_vocab)
