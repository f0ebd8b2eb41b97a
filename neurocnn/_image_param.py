"""Image parameterizations and regularizers of feature visualization (shared by its functions).

Pixel or Fourier (1/f-scaled spectrum, Olah et al. 2017) basis, decorrelated colour
(ImageNet colour PCA), Gaussian blur, total variation and jitter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["COLOR_SQRT", "ImageParam", "decorrelate_colors", "frequencies", "gaussian_blur", "jitter", "shift",
           "total_variation"]

#: Square root of the ImageNet colour covariance (Olah et al. 2017), columns scaled to norm <= 1.
COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_SQRT = COLOR_SQRT / COLOR_SQRT.norm(dim=0).max()


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour coordinates (N, 3, H, W) to RGB (Olah et al. 2017)."""
    return torch.einsum("ij,njhw->nihw", COLOR_SQRT.to(t.device, t.dtype), t)


def frequencies(h: int, w: int) -> torch.Tensor:
    """Radial frequency (cycles / pixel) of the rfft2 grid, shape (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fy**2 + fx**2)


class ImageParam:
    """An image in [0, 1] as sigmoid(colour(spatial(param))); pixel or Fourier spatial basis."""

    def __init__(self, kind: str, hw: tuple[int, int], decorrelate: bool, generator: torch.Generator,
                 device: torch.device, init_std: float = 0.01) -> None:
        self.kind, self.hw, self.decorrelate = kind, hw, decorrelate
        h, w = hw
        if kind == "fourier":
            shape = (1, 3, h, w // 2 + 1, 2)
            freq = frequencies(h, w)
            self.scale = (1.0 / freq.clamp(min=1.0 / max(h, w))).to(device)[None, None]
            self.freq = freq.to(device)
        else:
            shape = (1, 3, h, w)
        self.param = (torch.randn(shape, generator=generator) * init_std).to(device).requires_grad_(True)

    def image(self) -> torch.Tensor:
        t = self.param
        if self.kind == "fourier":
            spectrum = torch.view_as_complex(t.contiguous()) * self.scale
            t = torch.fft.irfft2(spectrum, s=self.hw, norm="ortho") / 4.0
        if self.decorrelate:
            t = decorrelate_colors(t)
        return torch.sigmoid(t)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """Gaussian blur of the image's spatial basis (exact in the Fourier basis)."""
        if self.kind == "fourier":
            self.param.mul_(torch.exp(-2 * math.pi**2 * sigma**2 * self.freq**2)[None, None, ..., None])
        else:
            self.param.copy_(gaussian_blur(self.param, sigma))

    @torch.no_grad()
    def decay(self, rate: float) -> None:
        """L2 decay: shrink towards the mid-gray image."""
        self.param.mul_(1.0 - rate)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def total_variation(img: torch.Tensor) -> torch.Tensor:
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


def shift(amount: int, generator: torch.Generator) -> tuple[int, int]:
    """A random roll (dy, dx) in [-amount, amount] (no draw when amount is 0)."""
    if amount == 0:
        return 0, 0
    dy, dx = torch.randint(-amount, amount + 1, (2,), generator=generator).tolist()
    return dy, dx


def jitter(img: torch.Tensor, amount: int, generator: torch.Generator) -> torch.Tensor:
    return torch.roll(img, shifts=shift(amount, generator), dims=(-2, -1))
