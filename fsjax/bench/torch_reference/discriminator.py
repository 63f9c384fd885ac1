"""Plain PyTorch (NCHW) pix2pixHD multi-scale PatchGAN, written from the design doc.

kernel 4, pad ceil((4 - 1) / 2) = 2, LeakyReLU(0.2), no sigmoid, every conv biased; scales
separated by AvgPool2d(3, 2, 1, count_include_pad=False). `init_weights` applies the
pix2pixHD init (conv N(0, 0.02), BN weight N(1, 0.02), bias 0).
"""

import math

import torch
from torch import nn


def _norm(kind, c):
  if kind == 'instance':
    return nn.InstanceNorm2d(c, affine=False, eps=1e-5)
  if kind == 'batch':
    return nn.BatchNorm2d(c)
  if kind == 'none':
    return nn.Identity()
  raise ValueError(kind)


class NLayerDiscriminator(nn.Module):
  """One PatchGAN: [B, C, H, W] -> [B, 1, h, w] logits."""

  def __init__(self, in_channels=3, ndf=64, n_layers=3, max_channels=512, norm='instance'):
    super().__init__()
    kw = 4
    pad = int(math.ceil((kw - 1) / 2))
    layers = [nn.Conv2d(in_channels, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2)]
    nf = ndf
    for n in range(1, n_layers + 1):
      prev, nf = nf, min(nf * 2, max_channels)
      stride = 2 if n < n_layers else 1
      layers += [nn.Conv2d(prev, nf, kw, stride=stride, padding=pad), _norm(norm, nf),
                 nn.LeakyReLU(0.2)]
    layers.append(nn.Conv2d(nf, 1, kw, stride=1, padding=pad))
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


class MultiscaleDiscriminator(nn.Module):
  """num_d PatchGANs; forward returns a list of logits, the full-resolution scale first."""

  def __init__(self, num_d=3, n_layers=6, ndf=64, max_channels=512, norm='instance',
               in_channels=3):
    super().__init__()
    self.scales = nn.ModuleList(
        NLayerDiscriminator(in_channels, ndf, n_layers, max_channels, norm)
        for _ in range(num_d))
    self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

  def forward(self, x):
    out = []
    for k, d in enumerate(self.scales):
      out.append(d(x))
      if k < len(self.scales) - 1:
        x = self.downsample(x)
    return out


def from_config(d_config):
  """MultiscaleDiscriminator from an fsjax config.discriminator."""
  return MultiscaleDiscriminator(d_config.num_d, d_config.n_layers, d_config.ndf,
                                 d_config.max_channels, d_config.norm)


@torch.no_grad()
def init_weights(module):
  """pix2pixHD init: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
  for m in module.modules():
    if isinstance(m, nn.Conv2d):
      m.weight.normal_(0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
      m.weight.normal_(1.0, 0.02)
      m.bias.zero_()
  return module
