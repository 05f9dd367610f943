"""network: the PhDLspec transformer — labels in, normalized flux on the LAMOST grid out.

Shape of the computation (see ``docs/emulator.md`` for the diagram)::

    30 scaled labels ──► 30 label tokens  t_i = x_i · a_i + b_i + e_i      (d_model)
                          │  (a_i, b_i: value embedding; e_i: which label)
                          ▼
                     encoder: n_encoder × [self-attention over the label tokens + MLP]
                          │  (labels interact: Teff × [X/Fe] set a line's strength)
                          ▼
    P wavelength-patch queries q_p = w_p (learned, one per patch of ``patch`` pixels)
                     decoder: n_decoder × [cross-attention patch → label tokens + MLP]
                          │  (each stretch of spectrum picks the labels its lines respond to)
                          ▼
                     linear head per patch token → ``patch`` pixels (shared weights, or
                     one head per patch with ``head="patch"``)
                     + a per-pixel linear term in the labels (the first-order response)
                          ▼
                     standardized flux → flux = mean_λ + std_λ · output

Per-pixel query tokens would cost 3909 × 30 attention entries per layer; patches of
``patch`` pixels cut the sequence to ~60 tokens, which keeps one spectrum under ~1 ms on
two CPU cores. The per-pixel linear term lets the attention layers spend their capacity
on the non-linear part of the response.

The network only sees the 30 physical labels (teff, logg, vmic, fe_h and the 26 [X/Fe]);
``vbroad`` and ``rv`` are applied afterwards, analytically (``broadening``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SpectrumTransformer"]


class _Attention(nn.Module):
    """Multi-head attention written out with einsum, so that forward-mode AD and
    ``torch.func`` transforms (the Jacobian the physics prior needs) work on it."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.h, self.dk = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.dk)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.h, self.dk).unbind(2)
        w = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(self.dk), dim=-1)
        return self.o(torch.einsum("bhts,bshd->bthd", w, v).reshape(B, T, -1))


class _Block(nn.Module):
    """Pre-norm attention block: x ← x + Attn(LN(x), LN(ctx)); x ← x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, cross: bool):
        super().__init__()
        self.cross = cross
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model) if cross else None
        self.attn = _Attention(d_model, n_heads)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_q(x)
        kv = self.norm_kv(ctx) if self.cross else q
        x = x + self.attn(q, kv)
        return x + self.mlp(self.norm_mlp(x))


class SpectrumTransformer(nn.Module):
    """(B, n_labels) scaled labels in [-1, 1] → (B, n_pix) standardized flux.

    Parameters
    ----------
    n_labels : number of label tokens (30)
    n_pix : output pixels (3909)
    d_model, n_heads, n_encoder, n_decoder, mlp_ratio : transformer sizes
    patch : pixels per wavelength-patch token
    head : "shared" — one linear map token → ``patch`` pixels for every patch (plus a
        per-patch bias); "patch" — a separate map per patch, so that a patch token need not
        spell out where its lines sit in a basis shared with every other stretch of spectrum
    """

    def __init__(self, n_labels: int = 30, n_pix: int = 3909, d_model: int = 64, n_heads: int = 4,
                 n_encoder: int = 2, n_decoder: int = 2, mlp_ratio: int = 2, patch: int = 64, head: str = "shared"):
        super().__init__()
        self.config = dict(n_labels=n_labels, n_pix=n_pix, d_model=d_model, n_heads=n_heads,
                           n_encoder=n_encoder, n_decoder=n_decoder, mlp_ratio=mlp_ratio, patch=patch)
        if head not in ("shared", "patch"):
            raise ValueError(f"head must be 'shared' or 'patch', not {head!r}")
        if head != "shared":     # older model files carry no `head` key: they are shared
            self.config["head"] = head
        self.n_labels, self.n_pix, self.patch = n_labels, n_pix, patch
        self.n_patches = math.ceil(n_pix / patch)
        # label tokens: a value embedding (a_i x_i + b_i) plus an identity embedding e_i;
        # a small MLP on the value lets each token carry a non-linear function of its label
        self.value_scale = nn.Parameter(torch.randn(n_labels, d_model) * 0.5)
        self.value_shift = nn.Parameter(torch.zeros(n_labels, d_model))
        self.identity = nn.Parameter(torch.randn(n_labels, d_model) * 0.02)
        self.token_mlp = nn.Sequential(nn.GELU(), nn.Linear(d_model, d_model))
        self.encoder = nn.ModuleList(_Block(d_model, n_heads, mlp_ratio, cross=False) for _ in range(n_encoder))
        self.queries = nn.Parameter(torch.randn(self.n_patches, d_model) * 0.02)
        self.decoder = nn.ModuleList(_Block(d_model, n_heads, mlp_ratio, cross=True) for _ in range(n_decoder))
        self.norm_out = nn.LayerNorm(d_model)
        if head == "shared":
            self.head = nn.Linear(d_model, patch)
        else:
            self.head_weight = nn.Parameter(torch.empty(self.n_patches, d_model, patch).uniform_(
                -1 / math.sqrt(d_model), 1 / math.sqrt(d_model)))
        # per-patch output offsets let the shared head specialize per stretch of spectrum
        self.head_bias = nn.Parameter(torch.zeros(self.n_patches, patch))
        self.linear = nn.Linear(n_labels, n_pix)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tok = x[..., :, None] * self.value_scale + self.value_shift
        tok = tok + self.token_mlp(tok) + self.identity
        for blk in self.encoder:
            tok = blk(tok)
        q = self.queries.expand(x.shape[0], -1, -1)
        for blk in self.decoder:
            q = blk(q, tok)
        h = self.norm_out(q)
        if "head" in self.config:
            out = torch.einsum("bpd,pdk->bpk", h, self.head_weight) + self.head_bias
        else:
            out = self.head(h) + self.head_bias                     # (B, P, patch)
        out = out.reshape(x.shape[0], -1)[:, : self.n_pix]
        return out + self.linear(x)
