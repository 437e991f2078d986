"""The video classifier: backbone -> optional reduction block -> pooling head -> dropout -> linear.

```
clip (B, 3, T, H, W)
  -> backbone                    (B, C, T', H', W')      forward_features
  -> reduction (FRAB) / identity (B, C', T', H', W')
  -> head (TGAP mean | BERT CLS)  (B, D)                  forward_head(pre_logits=True)
  -> dropout(0.8) -> linear       (B, K)                  forward_head
```

`ModelConfig` is everything needed to rebuild the architecture; it is stored inside every checkpoint, and
`build_model(**asdict(config))` rebuilds the same state-dict layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from actionbert.models.backbones import BACKBONES, get_backbone_spec, halve
from actionbert.models.heads import HEADS
from actionbert.models.reduction import REDUCTIONS


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a `VideoClassifier` (JSON-able; saved in checkpoints and exported model folders).

    Args:
        backbone: key of `BACKBONES`.
        head: key of `HEADS` ("tgap" or "bert").
        num_classes: K, outputs of the classifier.
        clip_len: frames per clip T; fixes the number of temporal tokens T' of the BERT positional table.
        reduction: None, "frab" or "frmb" (ResNeXt backbones only).
        input_size: crop side in pixels the model is trained at (recorded for inference; the CNN itself
            accepts any size).
        dropout: dropout before the classifier (the paper: 0.8).
        head_options: keyword options of the head (BERT: width, num_layers, num_heads, mlp_ratio, mask_prob,
            attn_dropout, dropout, norm).
    """

    backbone: str
    head: str
    num_classes: int
    clip_len: int
    reduction: str | None = None
    input_size: int = 112
    dropout: float = 0.8
    head_options: dict[str, Any] = field(default_factory=dict)


def num_tokens(backbone: str, clip_len: int) -> int:
    """T': temporal tokens a backbone makes from `clip_len` frames."""
    return halve(clip_len, get_backbone_spec(backbone).time_halvings)


def feature_size(backbone: str, input_size: int) -> int:
    """H' = W': spatial size of the last feature map for a square `input_size` crop."""
    return halve(input_size, get_backbone_spec(backbone).space_halvings)


class VideoClassifier(nn.Module):
    """Backbone + optional reduction block + pooling head + classifier (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        spec = get_backbone_spec(config.backbone)
        if config.head not in HEADS:
            raise ValueError(f"unknown head {config.head!r}; choose one of {', '.join(HEADS)}")
        if config.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")
        if config.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {config.clip_len}")
        self.config = config
        self.backbone = spec.build()
        channels = self.backbone.out_channels
        self.reduction: nn.Module = nn.Identity()
        if config.reduction is not None:
            if config.reduction not in REDUCTIONS:
                raise ValueError(f"unknown reduction {config.reduction!r}; choose one of {', '.join(REDUCTIONS)}")
            if spec.family != "resnext":
                raise ValueError(f"reduction {config.reduction!r} needs a ResNeXt backbone, not {config.backbone!r}")
            self.reduction, channels = REDUCTIONS[config.reduction](self.backbone, spec)
        tokens = num_tokens(config.backbone, config.clip_len)
        head_cls = HEADS[config.head]
        extra = {"clip_len": config.clip_len} if config.head == "bert" else {}
        self.head = head_cls(channels, tokens, **extra, **config.head_options)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.head.out_dim, config.num_classes)
        self._init_classifier(self.fc)

    @staticmethod
    def _init_classifier(fc: nn.Linear) -> None:
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) clip -> (B, C', T', H', W') features, after the reduction block if any."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip batch of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        return self.reduction(self.backbone(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C', T', H', W') -> logits (B, K), or the pooled vector (B, D) with `pre_logits=True`."""
        pooled = self.head(features)
        return pooled if pre_logits else self.fc(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, for BERT heads, the CLS attention over [CLS] + tokens per head (B, heads, T'+1)."""
        pooled, attention = self.head(self.forward_features(x), return_attention=True)
        return self.fc(self.dropout(pooled)), attention

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` outputs (fine-tuning on a new dataset)."""
        device, dtype = self.fc.weight.device, self.fc.weight.dtype
        self.fc = nn.Linear(self.head.out_dim, num_classes, device=device, dtype=dtype)
        self._init_classifier(self.fc)
        self.config = ModelConfig(**{**asdict(self.config), "num_classes": num_classes})


def build_model(*, backbone: str, head: str, num_classes: int, clip_len: int, reduction: str | None = None,
                input_size: int = 112, dropout: float = 0.8, head_options: dict[str, Any] | None = None,
                **options: Any) -> VideoClassifier:
    """Build a classifier. Extra keyword `options` go to the head (e.g. `mask_prob=0.2`, `num_layers=2`).

    `build_model(**asdict(model.config))` rebuilds the same architecture.
    """
    config = ModelConfig(backbone=backbone, head=head, num_classes=num_classes, clip_len=clip_len,
                         reduction=reduction, input_size=input_size, dropout=dropout,
                         head_options={**(head_options or {}), **options})
    return VideoClassifier(config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# The five models of the study (METHOD.md §1).
REFERENCE_MODELS: dict[str, dict[str, Any]] = {
    "resnext101_3d+tgap": dict(backbone="resnext101_3d", head="tgap", clip_len=64),
    "resnext101_3d+bert+frmb": dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frmb"),
    "resnext101_3d+bert+frab": dict(backbone="resnext101_3d", head="bert", clip_len=64, reduction="frab"),
    "r2plus1d_34+tgap": dict(backbone="r2plus1d_34", head="tgap", clip_len=32),
    "r2plus1d_34+bert": dict(backbone="r2plus1d_34", head="bert", clip_len=32),
}


def list_models(*, num_classes: int = 51) -> list[dict[str, Any]]:
    """One row per backbone, head, reduction block and reference model, with parameter counts.

    Built on the meta device: nothing is allocated or initialised, so this is fast even for ResNeXt-101.
    """
    rows: list[dict[str, Any]] = []

    def row(kind, name, params, spec_name, clip_len, tokens, channels):
        spec = BACKBONES[spec_name]
        size = spec.input_size
        rows.append({"kind": kind, "name": name, "params": params, "clip_len": clip_len, "tokens_T'": tokens,
                     "input": f"3x{clip_len}x{size}x{size}", "features": channels, "norm": spec.norm})

    with torch.device("meta"):
        for name, spec in BACKBONES.items():
            net = spec.build()
            h = feature_size(name, spec.input_size)
            row("backbone", name, count_parameters(net), name, spec.clip_len, num_tokens(name, spec.clip_len),
                f"{net.out_channels}x{num_tokens(name, spec.clip_len)}x{h}x{h}")
        for head in HEADS:
            model = build_model(backbone="r2plus1d_34", head=head, num_classes=num_classes, clip_len=32)
            row("head", f"{head} (C=512)", count_parameters(model.head), "r2plus1d_34", 32, 4, "512")
        for reduction in REDUCTIONS:
            model = build_model(backbone="resnext101_3d", head="bert", num_classes=num_classes, clip_len=64,
                                reduction=reduction)
            block = model.reduction if reduction == "frab" else model.backbone.layer4[-1]
            row("reduction", f"{reduction} (2048->512)", count_parameters(block), "resnext101_3d", 64, 4, "512x4x4x4")
        for name, kw in REFERENCE_MODELS.items():
            model = build_model(num_classes=num_classes, **kw)
            t = num_tokens(kw["backbone"], kw["clip_len"])
            h = feature_size(kw["backbone"], 112)
            row("model", f"{name} (K={num_classes})", count_parameters(model), kw["backbone"], kw["clip_len"], t,
                f"{model.head.out_dim}x{t}x{h}x{h}")
    return rows
