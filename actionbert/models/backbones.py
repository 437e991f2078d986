"""3D CNN backbones that return unpooled features `(B, C, T', H', W')`.

One trunk (`VideoResNetBackbone`: stem -> layer1..4) serves every family; a variant is a choice of stem, block
and per-stage convolution class, exactly as in torchvision's `models/video/resnet.py`, whose building blocks
(`BasicBlock`, `Conv2Plus1D`, `Conv3DSimple`, `Conv3DNoTemporal`) are reused as they are. Pooling and the
classifier are not part of a backbone: they live in the heads, so TGAP and BERT swap by configuration.

Families (METHOD.md §5):
- R(2+1)D / R3D / MC3 (Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition",
  CVPR 2018): torchvision's layouts; `r2plus1d_34` is the IG-65M release layout (Ghadiyaram et al., CVPR 2019)
  with wider mid convolutions in the first block of layers 2-4 and Caffe2 BatchNorm constants.
- ResNeXt-101 3D (Hara et al., "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?",
  CVPR 2018): grouped bottleneck blocks, expansion 2, shortcut B.

Each family also has a tiny variant (same code path, reduced widths and depths) for CPU work and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple

from actionbert import runtime

BlockFactory = Callable[[int, int, int, "nn.Module | None"], nn.Module]  # (inplanes, planes, stride, shortcut)


# ----------------------------------------------------------------------------------------------- stems
class StemConv3d(nn.Conv3d):
    """`nn.Conv3d` for the RGB stem that, in bf16 on the CPU, runs as one 2D convolution over stacked frames.

    Same parameters, state-dict keys and function as `nn.Conv3d`. With 3 input channels, each of the
    kd x kh x kw kernel taps is a matrix product with an inner dimension of 3, which the CPU's bf16 matrix units
    (AMX tiles: 32 bf16 values deep) mostly waste. Stacking the kd temporal taps of every output frame as channels,
    `(B, C, T, H, W) -> (B*T', C*kd, H, W)`, turns the convolution into a 2D one with an inner dimension of C*kd
    per tap. Measured on the 2-core CPU of `benchmarks/README.md` for ResNeXt-101's stem (7x7x7, 64x112x112,
    channels-last): bf16 forward 47.5 -> 19.6 ms, forward + weight gradient 103 -> 41 ms; in fp32 the stacked
    form is slower (58 -> 73 ms), so fp32, other devices and temporal kernels of size 1 keep the plain call.
    The gain comes from the AMX tiles' 32-deep dot products, so it stacks only on CPUs with AMX: AVX512-BF16's
    dot products are 2 deep (a 3-deep inner dimension wastes a quarter, not nine tenths), and a CPU without bf16
    instructions emulates bf16 altogether. `benchmarks/stem.py` measures both forms on any machine.
    The stacked input costs kd times the clip's memory (bf16) while it lives.
    """

    same_function_as_conv = True  # forward computes nn.Conv3d's function: BatchNorm folding may treat it as one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stacked(x) if self._stacking_pays(x) else super().forward(x)

    def _stacking_pays(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or self.kernel_size[0] == 1 or self.groups != 1 or self.padding_mode != "zeros":
            return False
        if isinstance(self.padding, str) or self.dilation != (1, 1, 1):
            return False
        bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu")
                                             and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return bf16 and runtime.cpu_bf16_units() == "AMX"

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution as a 2D convolution over temporally stacked frames (any dtype; used for bf16 on CPU)."""
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))  # stack in the compute dtype: half the bytes moved
        kd, kh, kw = self.kernel_size
        st, sh, sw = self.stride
        pt, ph, pw = self.padding
        b, c = x.shape[:2]
        x = nn.functional.pad(x, (0, 0, 0, 0, pt, pt))  # (B, C, T + 2pt, H, W): temporal zero padding
        cols = x.unfold(2, kd, st)  # (B, C, T', H, W, kd): the kd frames each output frame sees
        t_out, h, w = cols.shape[2:5]
        cols = cols.permute(0, 2, 3, 4, 1, 5).reshape(b * t_out, h, w, c * kd)  # (B*T', H, W, C*kd), one copy
        cols = cols.permute(0, 3, 1, 2)  # (B*T', C*kd, H, W), channels-last strides
        weight = self.weight.reshape(self.out_channels, c * kd, kh, kw)  # (O, C*kd, kh, kw): channel index c*kd + j
        y = nn.functional.conv2d(cols, weight, self.bias, stride=(sh, sw), padding=(ph, pw))  # (B*T', O, H', W')
        y = y.reshape(b, t_out, *y.shape[1:])  # (B, T', O, H', W')
        return y.permute(0, 2, 1, 3, 4)  # (B, O, T', H', W')


def r2plus1d_stem(*, mid: int = 45, out: int = 64, temporal_stride: int = 1) -> nn.Sequential:
    """(2+1)D stem: spatial 1x7x7 stride (1,2,2) to `mid` channels, then temporal 3x1x1 to `out`; no pooling.

    With the defaults its layout and state-dict keys equal torchvision's `R2Plus1dStem`; `temporal_stride` 2 makes
    the temporal convolution halve time (used by `r2plus1d_local_tiny`).
    """
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, out, kernel_size=(3, 1, 1), stride=(temporal_stride, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(out),
        nn.ReLU(inplace=True),
    )


def basic_stem(*, out: int = 64) -> nn.Sequential:
    """R3D / MC3 stem: 3x7x7 stride (1,2,2); equals torchvision's `BasicStem` with the default width."""
    return nn.Sequential(
        StemConv3d(3, out, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(out),
        nn.ReLU(inplace=True),
    )


def resnext_stem(*, out: int = 64) -> nn.Sequential:
    """Hara's ResNeXt stem: 7x7x7 stride (1,2,2) padding 3, BN, ReLU, max-pool 3x3x3 stride 2 (also in time)."""
    return nn.Sequential(
        StemConv3d(3, out, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False),
        nn.BatchNorm3d(out),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
    )


# ---------------------------------------------------------------------------------------------- blocks
class Conv2DTimeStride(nn.Conv3d):
    """A 1x3x3 convolution (no temporal mixing) whose stride also subsamples time: with stride 2 it keeps every
    other frame's features. A drop-in `conv_maker` for torchvision's `BasicBlock`, like `Conv3DNoTemporal`, whose
    shortcut then subsamples time too; it downsamples time without widening the temporal receptive field."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(stride, stride, stride),
                         padding=(0, padding, padding), bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class ResNeXtBottleneck(nn.Module):
    """Hara's 3D ResNeXt bottleneck: 1x1x1 -> grouped 3x3x3 (stride) -> 1x1x1, expansion 2.

    The mid width is `cardinality * (planes // 32)` in Hara's formula; that equals `planes` at cardinality 32,
    which is what we use so that tiny variants with a smaller cardinality keep the same proportions.
    """

    expansion = 2

    def __init__(self, inplanes: int, planes: int, *, cardinality: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        if planes % cardinality:
            raise ValueError(f"ResNeXt planes ({planes}) must be a multiple of the cardinality ({cardinality})")
        mid = planes
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(inplanes, mid, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def projection_shortcut(inplanes: int, outplanes: int, stride: int | tuple[int, int, int]) -> nn.Sequential:
    """Shortcut B: 1x1x1 convolution + BatchNorm, used whenever the block changes shape."""
    return nn.Sequential(
        nn.Conv3d(inplanes, outplanes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm3d(outplanes),
    )


def init_conv_bn(module: nn.Module, *, mode: str = "fan_out") -> None:
    """Kaiming-normal convolutions (ReLU gain; fan_out as torchvision and Hara), BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------- trunk
@dataclass(frozen=True)
class Stage:
    """How to build one residual stage.

    Args:
        block: builds a block from (inplanes, planes, stride, shortcut-or-None).
        expansion: output channels = planes * expansion.
        shortcut_stride: maps the stage stride to the shortcut's (T, H, W) stride.
    """

    block: BlockFactory
    expansion: int
    shortcut_stride: Callable[[int], int | tuple[int, int, int]]


def torchvision_stage(conv_maker: type[nn.Module]) -> Stage:
    """A stage of torchvision's BasicBlock with the given convolution class (Conv2Plus1D, Conv3DSimple, ...)."""
    return Stage(
        block=lambda inp, planes, stride, sc: BasicBlock(inp, planes, conv_maker, stride, sc),
        expansion=BasicBlock.expansion,
        shortcut_stride=conv_maker.get_downsample_stride,
    )


def resnext_stage(cardinality: int) -> Stage:
    return Stage(
        block=lambda inp, planes, stride, sc: ResNeXtBottleneck(inp, planes, cardinality=cardinality,
                                                                stride=stride, downsample=sc),
        expansion=ResNeXtBottleneck.expansion,
        shortcut_stride=lambda s: s,
    )


class VideoResNetBackbone(nn.Module):
    """stem -> layer1 -> layer2 -> layer3 -> layer4, returning the unpooled last feature map.

    ```
    x (B, 3, T, H, W) -> stem -> layer1 (stride 1) -> layer2..4 (stride 2) -> (B, out_channels, T', H', W')
    ```

    Args:
        stem: the stem module; its output has `stem_channels` channels.
        stages: one `Stage` per layer (4).
        layers: number of blocks per layer.
        planes: base width of each layer (output = planes * expansion).
        strides: stride of each layer's first block.
    """

    def __init__(self, *, stem: nn.Module, stem_channels: int, stages: Sequence[Stage], layers: Sequence[int],
                 planes: Sequence[int], strides: Sequence[int] = (1, 2, 2, 2)) -> None:
        super().__init__()
        if not len(stages) == len(layers) == len(planes) == len(strides) == 4:
            raise ValueError("a VideoResNet backbone has exactly 4 stages")
        self.stem = stem
        inplanes = stem_channels
        for i, (stage, n, p, s) in enumerate(zip(stages, layers, planes, strides), start=1):
            layer, inplanes = self._make_layer(stage, inplanes, p, n, s)
            self.add_module(f"layer{i}", layer)
        self.out_channels = inplanes
        init_conv_bn(self)

    @staticmethod
    def _make_layer(stage: Stage, inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
        outplanes = planes * stage.expansion
        shortcut = None
        if stride != 1 or inplanes != outplanes:
            shortcut = projection_shortcut(inplanes, outplanes, stage.shortcut_stride(stride))
        layer = [stage.block(inplanes, planes, stride, shortcut)]
        layer += [stage.block(outplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layer), outplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C0, T, H/2, W/2)  (ResNeXt: max-pooled, (B, C0, T/2, H/4, W/4))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (B, C, T', H', W')


# --------------------------------------------------------------------------------------------- builders
def _set_batchnorm(module: nn.Module, *, eps: float, momentum: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps, m.momentum = eps, momentum


def _r2plus1d(*, layers: Sequence[int], planes: Sequence[int], stem_mid: int, stem_out: int) -> VideoResNetBackbone:
    return VideoResNetBackbone(stem=r2plus1d_stem(mid=stem_mid, out=stem_out), stem_channels=stem_out,
                               stages=[torchvision_stage(Conv2Plus1D)] * 4, layers=layers, planes=planes)


def r2plus1d_18() -> VideoResNetBackbone:
    """torchvision's R(2+1)D-18 layout (Kinetics-400 weights exist), 512 output channels."""
    return _r2plus1d(layers=(2, 2, 2, 2), planes=(64, 128, 256, 512), stem_mid=45, stem_out=64)


def r2plus1d_34() -> VideoResNetBackbone:
    """The IG-65M R(2+1)D-34: layers [3,4,6,3]; the second (2+1)D conv of the first block of layers 2-4 has mid
    widths 288/576/1152 (Caffe2's rule, where torchvision's gives 230/460/921); BatchNorm eps 1e-3, momentum 0.9.
    """
    net = _r2plus1d(layers=(3, 4, 6, 3), planes=(64, 128, 256, 512), stem_mid=45, stem_out=64)
    for layer, width, mid in ((net.layer2, 128, 288), (net.layer3, 256, 576), (net.layer4, 512, 1152)):
        layer[0].conv2[0] = Conv2Plus1D(width, width, mid)
        init_conv_bn(layer[0].conv2[0])
    _set_batchnorm(net, eps=1e-3, momentum=0.9)
    return net


def r3d_18() -> VideoResNetBackbone:
    return VideoResNetBackbone(stem=basic_stem(out=64), stem_channels=64, stages=[torchvision_stage(Conv3DSimple)] * 4,
                               layers=(2, 2, 2, 2), planes=(64, 128, 256, 512))


def mc3_18() -> VideoResNetBackbone:
    """Mixed convolutions: full 3D in layer1, 2D (1x3x3) in layers 2-4, so time is never downsampled."""
    stages = [torchvision_stage(Conv3DSimple)] + [torchvision_stage(Conv3DNoTemporal)] * 3
    return VideoResNetBackbone(stem=basic_stem(out=64), stem_channels=64, stages=stages,
                               layers=(2, 2, 2, 2), planes=(64, 128, 256, 512))


def resnext101_3d() -> VideoResNetBackbone:
    """Hara's ResNeXt-101 (cardinality 32, shortcut B), 2048 output channels."""
    return VideoResNetBackbone(stem=resnext_stem(out=64), stem_channels=64, stages=[resnext_stage(32)] * 4,
                               layers=(3, 4, 23, 3), planes=(128, 256, 512, 1024))


# Tiny variants: same code paths, widths /4 and one block per stage (two in ResNeXt's layer 4, so FRMB has a
# stride-1 block to replace) (a training step on a 16x64x64 clip in
# tens of milliseconds on a CPU core).
def r2plus1d_tiny() -> VideoResNetBackbone:
    return _r2plus1d(layers=(1, 1, 1, 1), planes=(16, 32, 64, 128), stem_mid=12, stem_out=16)


def r2plus1d_local_tiny() -> VideoResNetBackbone:
    """A tiny R(2+1)D whose temporal tokens are local: the demo's backbone (`actionbert.demo`).

    The stem's temporal convolution halves time, layer 1 is (2+1)D, layers 2-3 halve time again without temporal
    kernels (`Conv2DTimeStride`) and layer 4 is spatial only: 32 frames give T' = 4 tokens, as R(2+1)D-34 does, but
    token k sees only frames 8k-5 .. 8k+5 (11 frames; `temporal_windows` measures it) instead of the whole clip.
    Widths 8/16/32/64 (64 output channels).
    """
    stages = [torchvision_stage(Conv2Plus1D), torchvision_stage(Conv2DTimeStride),
              torchvision_stage(Conv2DTimeStride), torchvision_stage(Conv3DNoTemporal)]
    return VideoResNetBackbone(stem=r2plus1d_stem(mid=8, out=8, temporal_stride=2), stem_channels=8, stages=stages,
                               layers=(1, 1, 1, 1), planes=(8, 16, 32, 64))


def r3d_tiny() -> VideoResNetBackbone:
    return VideoResNetBackbone(stem=basic_stem(out=16), stem_channels=16, stages=[torchvision_stage(Conv3DSimple)] * 4,
                               layers=(1, 1, 1, 1), planes=(16, 32, 64, 128))


def mc3_tiny() -> VideoResNetBackbone:
    stages = [torchvision_stage(Conv3DSimple)] + [torchvision_stage(Conv3DNoTemporal)] * 3
    return VideoResNetBackbone(stem=basic_stem(out=16), stem_channels=16, stages=stages,
                               layers=(1, 1, 1, 1), planes=(16, 32, 64, 128))


def resnext_tiny() -> VideoResNetBackbone:
    return VideoResNetBackbone(stem=resnext_stem(out=16), stem_channels=16, stages=[resnext_stage(8)] * 4,
                               layers=(1, 1, 1, 2), planes=(16, 32, 64, 128))


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of the library needs to know about a backbone without building it.

    Args:
        build: the builder.
        family: "videoresnet" or "resnext" (reduction blocks exist only for "resnext").
        clip_len: frames per clip the method uses with it.
        input_size: square crop side in pixels.
        time_halvings: how many stride-2 steps in time (T' = T halved, rounded up, this many times).
        space_halvings: the same for H and W.
        norm: normalisation preset of its pretrained weights (`actionbert.data.transforms.NORMALIZATION`).
        cardinality: ResNeXt group count (used by the reduction blocks).
    """

    build: Callable[[], VideoResNetBackbone]
    family: str
    clip_len: int
    input_size: int
    time_halvings: int
    space_halvings: int
    norm: str
    cardinality: int = 0


BACKBONES: dict[str, BackboneSpec] = {
    "r2plus1d_18": BackboneSpec(r2plus1d_18, "videoresnet", 16, 112, 3, 4, "torchvision"),
    "r2plus1d_34": BackboneSpec(r2plus1d_34, "videoresnet", 32, 112, 3, 4, "torchvision"),
    "r3d_18": BackboneSpec(r3d_18, "videoresnet", 16, 112, 3, 4, "torchvision"),
    "mc3_18": BackboneSpec(mc3_18, "videoresnet", 16, 112, 0, 4, "torchvision"),
    "resnext101_3d": BackboneSpec(resnext101_3d, "resnext", 64, 112, 4, 5, "hara", cardinality=32),
    "r2plus1d_tiny": BackboneSpec(r2plus1d_tiny, "videoresnet", 32, 112, 3, 4, "torchvision"),
    "r2plus1d_local_tiny": BackboneSpec(r2plus1d_local_tiny, "videoresnet", 32, 16, 3, 4, "torchvision"),
    "r3d_tiny": BackboneSpec(r3d_tiny, "videoresnet", 32, 112, 3, 4, "torchvision"),
    "mc3_tiny": BackboneSpec(mc3_tiny, "videoresnet", 16, 112, 0, 4, "torchvision"),
    "resnext_tiny": BackboneSpec(resnext_tiny, "resnext", 64, 112, 4, 5, "hara", cardinality=8),
}


def halve(n: int, times: int) -> int:
    """Size after `times` stride-2 steps with kernel 3 and padding 1: ceil(n / 2) each time."""
    for _ in range(times):
        n = (n + 1) // 2
    return n


def temporal_windows(name: str, clip_len: int, *, size: int = 32) -> list[tuple[int, int]]:
    """First and last input frame each temporal token of a backbone depends on, measured by back-propagation.

    Builds the backbone (float64, eval mode, its own random weights, the caller's RNG state untouched), feeds one
    random clip per token and returns, for token k, the range of frames whose gradient of token k is not zero.
    A token whose window is narrower than the others' is one that reaches past the clip (zero padding there).
    """
    tokens = halve(clip_len, get_backbone_spec(name).time_halvings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = get_backbone_spec(name).build().double().eval()
        x = torch.randn(tokens, 3, clip_len, size, size, dtype=torch.float64, requires_grad=True)
    out = net(x)  # (T', C, T', H', W'): sample k is read at token k only
    out[torch.arange(tokens), :, torch.arange(tokens)].sum().backward()
    reach = x.grad.abs().sum(dim=(1, 3, 4)) > 0  # (T', T): frames token k depends on
    windows = []
    for k in range(tokens):
        frames = reach[k].nonzero().flatten().tolist()
        windows.append((frames[0], frames[-1]))
    return windows


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None
