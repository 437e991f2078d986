"""Feature-reduction blocks for ResNeXt backbones (METHOD.md §6).

ResNeXt-101's layer 4 ends at 2048 channels while BERT works at 512. Both blocks are one ResNeXt bottleneck
2048 -> 512 (planes 256, the backbone's cardinality, stride 1, projection shortcut), freshly initialised:

- FRAB ("additional block"): appended after layer 4; every pretrained block is kept.
- FRMB ("modified block"): replaces the last block of layer 4; cheaper, but that block starts untrained.

Tiny backbones keep the same proportion: out = layer-4 channels / 4.
"""

from __future__ import annotations

from torch import nn

from actionbert.models.backbones import (BackboneSpec, ResNeXtBottleneck, VideoResNetBackbone, init_conv_bn,
                                         projection_shortcut)


def reduction_block(in_channels: int, out_channels: int, *, cardinality: int) -> ResNeXtBottleneck:
    """One freshly initialised bottleneck in -> out channels (2048 -> 512, planes 256 for ResNeXt-101)."""
    planes = out_channels // ResNeXtBottleneck.expansion
    block = ResNeXtBottleneck(in_channels, planes, cardinality=cardinality, stride=1,
                              downsample=projection_shortcut(in_channels, out_channels, 1))
    init_conv_bn(block, mode="fan_in")  # the reference re-initialises this block with kaiming_normal_ defaults
    return block


def add_frab(backbone: VideoResNetBackbone, spec: BackboneSpec) -> tuple[nn.Module, int]:
    """FRAB: returns (block to run after the backbone, its output channels)."""
    out = backbone.out_channels // 4
    return reduction_block(backbone.out_channels, out, cardinality=spec.cardinality), out


def apply_frmb(backbone: VideoResNetBackbone, spec: BackboneSpec) -> tuple[nn.Module, int]:
    """FRMB: replaces the last block of layer 4 in place; returns (Identity, new output channels)."""
    if len(backbone.layer4) < 2:
        raise ValueError("FRMB replaces the last (stride-1) block of layer 4, so layer 4 needs at least 2 blocks")
    in_channels = backbone.layer4[-1].conv1.in_channels  # what the replaced block received
    block = reduction_block(in_channels, backbone.out_channels // 4, cardinality=spec.cardinality)
    backbone.layer4[-1] = block
    backbone.out_channels = block.bn3.num_features
    return nn.Identity(), backbone.out_channels


REDUCTIONS = {"frab": add_frab, "frmb": apply_frmb}
