"""CsiNet: a convolutional autoencoder for CSI feedback (Wen, Shih and Jin 2018).

The user (encoder) maps the real image
``(2, M, T)`` of its truncated angular-delay channel (:func:`lib.phy.realify_image`) to a
codeword of ``m = ratio * 2 M T`` reals; the base station (decoder) maps the codeword back to
an image. The architecture:

* encoder: one 3x3 convolution with 2 feature maps, batch normalisation, LeakyReLU(0.3),
  flatten, a dense layer to ``m`` outputs (linear);
* decoder: a dense layer back to ``2 M T``, reshape, ``n_refine`` RefineNet blocks (3x3
  convolutions with 8, 16 and 2 feature maps, batch normalisation, LeakyReLU(0.3) between
  them, an identity shortcut), and a final 3x3 convolution with 2 maps.

The original ends with a sigmoid because it scales the image into ``[0, 1]``; this one has a
linear output layer, meant for images normalised to unit energy per sample (then the mean
squared error of the output is proportional to the NMSE of the image).
"""

from __future__ import annotations

import torch
from torch import nn

from lib.core.checks import check_number, check_positive_int, check_real

__all__ = ["CsiNet", "codeword_size"]


def codeword_size(ratio: float, n_antennas: int, n_taps: int) -> int:
    """``m = ratio * 2 M T``; ``ValueError`` unless it is a positive integer."""
    ratio = check_number(ratio, "ratio", lo=0, hi=1, lo_open=True)
    M = check_positive_int(n_antennas, "n_antennas")
    T = check_positive_int(n_taps, "n_taps")
    m = ratio * 2 * M * T
    if abs(m - round(m)) > 1e-9 or round(m) < 1:
        raise ValueError(f"ratio * 2 M T must be a positive integer, got {ratio} * {2 * M * T}")
    return int(round(m))


def _conv_bn(c_in, c_out, act=True):
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.LeakyReLU(0.3))
    return layers


class _RefineNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(2, 8), *_conv_bn(8, 16), *_conv_bn(16, 2, act=False))
        self.act = nn.LeakyReLU(0.3)

    def forward(self, x):
        return self.act(x + self.body(x))


class CsiNet(nn.Module):
    """CsiNet encoder and decoder for ``(2, M, T)`` images at compression ``ratio``.

    Parameters
    ----------
    ratio : float
        Compression ratio ``m / (2 M T)`` in ``(0, 1]``.
    n_antennas, n_taps : int
        Image size ``M x T``.
    n_refine : int
        RefineNet blocks in the decoder (2 in the paper).

    ``model(Z)`` with ``Z`` ``(B, 2, M, T)`` real returns the reconstruction, same shape;
    :meth:`encode` and :meth:`decode` are the two halves (user and base station).
    """

    def __init__(self, ratio: float, n_antennas: int, n_taps: int, *, n_refine: int = 2):
        super().__init__()
        self.m = codeword_size(ratio, n_antennas, n_taps)
        self.ratio = float(ratio)
        self.M, self.T = int(n_antennas), int(n_taps)
        n_refine = check_positive_int(n_refine, "n_refine", minimum=0)
        n = 2 * self.M * self.T
        self.encoder_conv = nn.Sequential(*_conv_bn(2, 2))
        self.encoder_fc = nn.Linear(n, self.m)
        self.decoder_fc = nn.Linear(self.m, n)
        self.refine = nn.Sequential(*[_RefineNet() for _ in range(n_refine)])
        self.decoder_conv = nn.Conv2d(2, 2, 3, padding=1)

    def _check(self, Z):
        check_real(Z, "Z", shape=("batch", 2, self.M, self.T))

    def encode(self, Z: torch.Tensor) -> torch.Tensor:
        """``(B, 2, M, T)`` images to ``(B, m)`` codewords."""
        self._check(Z)
        return self.encoder_fc(self.encoder_conv(Z).flatten(1))

    def decode(self, s: torch.Tensor) -> torch.Tensor:
        """``(B, m)`` codewords to ``(B, 2, M, T)`` images."""
        check_real(s, "s", shape=("batch", self.m))
        Z = self.decoder_fc(s).view(-1, 2, self.M, self.T)
        return self.decoder_conv(self.refine(Z))

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        self._check(Z)
        s = self.encoder_fc(self.encoder_conv(Z).flatten(1))
        Z_hat = self.decoder_fc(s).view(-1, 2, self.M, self.T)
        return self.decoder_conv(self.refine(Z_hat))
