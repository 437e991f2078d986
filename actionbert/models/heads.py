"""Pooling heads: turn backbone features `(B, C, T', H', W')` into one clip vector `(B, D)`.

- `TGAPHead`: temporal global average pooling, the 3D-CNN baseline (METHOD.md §4).
- `BertHead`: late temporal modeling with a one-layer BERT encoder over the T' temporal tokens (Kalfaoglu et al.,
  "Late Temporal Modeling in 3D CNN Architectures with BERT for Action Recognition", ECCV-W 2020, METHOD.md §3).

The classifier (dropout 0.8 -> linear) is not part of a head; `VideoClassifier` adds it, so a head's parameter
count is the pooling part alone (3,155,456 for BERT at C = 512, T' = 4).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class TGAPHead(nn.Module):
    """Mean over T', H', W'.  ``(B, C, T', H', W') -> (B, C)``"""

    def __init__(self, in_channels: int, num_tokens: int) -> None:
        super().__init__()
        self.out_dim = in_channels
        self.num_tokens = num_tokens

    def forward(self, features: torch.Tensor, *, return_attention: bool = False):
        pooled = features.mean(dim=(2, 3, 4))  # (B, C)
        return (pooled, None) if return_attention else pooled


class ReferenceNorm(nn.Module):
    """`a * (x - mean) / (std + eps) + b` over the last dimension, std unbiased (N - 1).

    This is the reference implementation's norm; it differs from `nn.LayerNorm` (biased variance inside the
    square root, eps added to the variance), so it is the default to reproduce the reference numerically.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)  # unbiased
        return self.weight * (x - mean) / (std + self.eps) + self.bias


NORMS = {"reference": ReferenceNorm, "layernorm": nn.LayerNorm}


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with separate Q, K, V projections and key masking.

    Args:
        dim: token width C.
        num_heads: number of heads; each has d_k = C / num_heads.
        attn_dropout: dropout on the attention probabilities.
    """

    def __init__(self, dim: int, num_heads: int, attn_dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"BERT width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, N, C); keep: (B, N) bool, False = this token cannot be attended to. Returns (out, probs)."""
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, d)
        k = self.k(x).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, d)
        v = self.v(x).view(B, N, h, C // h).transpose(1, 2)  # (B, h, N, d)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // h)  # (B, h, N, N)
        # key masking, the same for every query and head; the dtype's lowest value, not a constant such as -1e9,
        # which does not fit in fp16 (autocast): softmax gives masked keys exactly 0 in any precision
        scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        out = self.attn_drop(probs) @ v  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj(out), probs


class FeedForward(nn.Module):
    """C -> hidden -> C with tanh-approximated GELU and dropout between the two layers."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x), approximate="tanh")))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + drop(attn(norm1(x))), then x + drop(ffn(norm2(x))), then dropout on the output."""

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: int, attn_dropout: float, dropout: float,
                 norm: str) -> None:
        super().__init__()
        self.norm1 = NORMS[norm](dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, attn_dropout)
        self.norm2 = NORMS[norm](dim)
        self.mlp = FeedForward(dim, dim * mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, probs = self.attn(self.norm1(x), keep)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return self.drop(x), probs


class BertHead(nn.Module):
    """BERT over the temporal tokens of a 3D CNN; returns the final CLS vector.

    ```
    features (B, C, T', H', W')
      -> spatial mean -> tokens (B, T', C)  [-> linear C -> width, only if width != C]
      -> [CLS] + tokens (B, T'+1, width) + learned positions -> dropout
      -> transformer block(s) with key masking (training: each token kept with p = 1 - mask_prob; CLS always)
      -> CLS (B, width)
    ```

    Args:
        in_channels: backbone feature channels C.
        num_tokens: T', the number of temporal tokens the positional table is built for.
        clip_len: frames per clip that give `num_tokens` tokens (only used in error messages).
        width: token width inside BERT; defaults to `in_channels` (the paper: 512).
        num_layers: transformer blocks (paper: 1).
        num_heads: attention heads (paper: 8).
        mlp_ratio: FFN hidden width / width (paper: 4).
        mask_prob: probability that a feature token is masked during training (paper: 0.2).
        attn_dropout: dropout on attention probabilities (0.1).
        dropout: dropout after the embedding, in the FFN, on both residual branches and on the block output (0.1).
        norm: "reference" (std-based, default) or "layernorm".
    """

    def __init__(self, in_channels: int, num_tokens: int, *, clip_len: int | None = None, width: int | None = None,
                 num_layers: int = 1, num_heads: int = 8, mlp_ratio: int = 4, mask_prob: float = 0.2,
                 attn_dropout: float = 0.1, dropout: float = 0.1, norm: str = "reference") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        if not 0.0 <= mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in [0, 1), got {mask_prob}")
        width = width or in_channels
        self.out_dim = width
        self.num_tokens = num_tokens
        self.clip_len = clip_len
        self.mask_prob = mask_prob
        self.input_proj = nn.Linear(in_channels, width) if width != in_channels else nn.Identity()
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens + 1, width))
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, num_heads=num_heads, mlp_ratio=mlp_ratio, attn_dropout=attn_dropout,
                             dropout=dropout, norm=norm)
            for _ in range(num_layers)
        )
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def sample_keep_mask(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """Training-time mask over [CLS] + tokens: (B, T'+1) bool, True = kept; CLS (column 0) always kept."""
        keep = torch.rand(batch, self.num_tokens + 1, device=device) >= self.mask_prob
        keep[:, 0] = True
        return keep

    def forward(self, features: torch.Tensor, *, keep_mask: torch.Tensor | None = None,
                return_attention: bool = False):
        """Pool features into the CLS vector.

        Args:
            features: (B, C, T', H', W') backbone features.
            keep_mask: optional (B, T') bool over the feature tokens (True = may be attended to). By default a
                random mask in training mode and everything kept in eval mode.
            return_attention: also return the CLS row of the last block's attention, (B, heads, T'+1).
        """
        B, C, T = features.shape[:3]
        if T != self.num_tokens:
            fits = f" (clips of {self.clip_len} frames give {self.num_tokens})" if self.clip_len else ""
            raise ValueError(
                f"BERT head's positional table holds {self.num_tokens} temporal tokens{fits}, but these features "
                f"have {T}; feed clips of the length the model was built for or rebuild it with that clip_len"
            )
        tokens = features.mean(dim=(3, 4)).transpose(1, 2)  # (B, T', C)
        tokens = self.input_proj(tokens)  # (B, T', D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)  # (B, T'+1, D)
        x = self.embed_drop(x + self.pos_embed)
        if keep_mask is not None:
            if keep_mask.shape != (B, T):
                raise ValueError(f"keep_mask must have shape {(B, T)}, got {tuple(keep_mask.shape)}")
            keep = torch.cat([keep_mask.new_ones(B, 1), keep_mask], dim=1).bool()  # (B, T'+1)
        elif self.training and self.mask_prob > 0:
            keep = self.sample_keep_mask(B, x.device)
        else:
            keep = torch.ones(B, T + 1, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x, probs = block(x, keep)
        cls = x[:, 0]  # (B, D)
        return (cls, probs[:, :, 0, :]) if return_attention else cls


HEADS = {"tgap": TGAPHead, "bert": BertHead}
