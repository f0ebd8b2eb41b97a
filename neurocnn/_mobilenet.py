"""Real-weights MobileNetV2: torchvision's int8 TorchScript model dequantized to float (private).

The int8 file (``data/weights/mobilenet_v2_quantized.pt``, torchvision's
``QuantizableMobileNetV2`` traced by pytorch/ios-demo-app) holds BN-folded convolutions
as packed parameters named after torchvision's module paths
(``_jit_pass_hoist_conv_packed_params.features.1.conv.0.0._packed_params.2``) and the
classifier as a packed linear layer. :func:`dequantized_state_dict` unpacks them with
``torch.ops.quantized.conv2d_unpack`` / ``linear_unpack`` and dequantizes them into a
state dict of :func:`build_folded_mobilenet_v2`: torchvision's ``mobilenet_v2`` with the
BatchNorms replaced by ``nn.Identity`` (they are folded into the convolutions, which
therefore get biases) and every ``ReLU6`` replaced by ``nn.ReLU`` (the quantizable
model fuses conv + ReLU). Module names are torchvision's (``features.N...``).

How close the float model is to the int8 original (measured on the 92 images of
Kriegeskorte et al. 2008, ImageNet preprocessing 256/224; ``tests/test_mobilenet.py``):
the per-image correlation of the 1000 logits is 0.993 on average (minimum 0.978), the
top-1 class agrees for 85 of 92 images (92.4 %), and the int8 top-1 class is among the
float model's top 5 for 91 of 92. The differences are the int8 rounding of the
activations, which the float model does not repeat.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import torch
import torchvision
from torch import nn

__all__: list[str] = []

_PACKED = re.compile(r'getattr\(self, "(_jit_pass_hoist_conv_packed_params\.(.+)\._packed_params\.\d+)"\)')


def build_folded_mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """Return torchvision's MobileNetV2 with identity BNs, biased convs and ReLU activations."""
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, child_name, nn.Identity())
            elif isinstance(child, nn.ReLU6):
                setattr(module, child_name, nn.ReLU())
            elif isinstance(child, nn.Conv2d) and child.bias is None:
                child.bias = nn.Parameter(torch.zeros(child.out_channels))
    return model


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (rather than a pickled state dict)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 2)[1:2] == ["code"] for n in archive.namelist())


def load_scripted(path: str | Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` the int8 model on the CPU (its deprecation warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.jit.load(str(path), map_location="cpu")


def dequantized_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the int8 TorchScript MobileNetV2 and return a float state dict of the folded model.

    A file that is not TorchScript is read as an ordinary (float) state dict, so a
    user's own ``torch.save(model.state_dict())`` of the folded model loads too.
    """
    if not is_torchscript(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit / quantized ops are deprecated
        warnings.simplefilter("ignore", UserWarning)
        return _unpack(load_scripted(path))


def _unpack(scripted: torch.jit.ScriptModule) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    found = _PACKED.findall(scripted.code)
    if not found:
        raise ValueError("no packed convolution parameters found: not torchvision's int8 MobileNetV2")
    for attr, module_path in found:
        weight, bias = torch.ops.quantized.conv2d_unpack(getattr(scripted, attr))
        state[f"{module_path}.weight"] = weight.dequantize()
        state[f"{module_path}.bias"] = bias.detach().clone()
    weight, bias = torch.ops.quantized.linear_unpack(getattr(scripted.classifier, "1")._packed_params._packed_params)
    state["classifier.1.weight"] = weight.dequantize()
    state["classifier.1.bias"] = bias.detach().clone()
    return state
