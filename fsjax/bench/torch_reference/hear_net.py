"""Plain PyTorch (NCHW) HEAR-Net written from shared/design/faceshifter.md, and its converter.

`HEARNet(channels)` is the U-Net of the design notes (6 -> 3 channels, biased convs,
BatchNorm, LeakyReLU 0.1, skip concatenations, align_corners x2, tanh);
`hear_net_to_flax(model)` copies its weights into the variables of
fsjax.models.hear_net.HEARNet (layouts as in convert.py).
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

PAPER_CHANNELS = (64, 128, 256, 512, 512)


class HEARNet(nn.Module):
  """forward(x [B, 6, S, S]) -> [B, 3, S, S] in [-1, 1]."""

  def __init__(self, channels=PAPER_CHANNELS, in_channels=6, out_channels=3):
    super().__init__()
    channels = tuple(channels)
    self.down = nn.ModuleList()
    cin = in_channels
    for c in channels:
      self.down.append(nn.Sequential(nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=True),
                                     nn.BatchNorm2d(c)))
      cin = c
    self.up = nn.ModuleList()
    for c in reversed(channels[:-1]):
      self.up.append(nn.Sequential(
          nn.ConvTranspose2d(cin, c, 4, stride=2, padding=1, bias=True), nn.BatchNorm2d(c)))
      cin = 2 * c  # after the skip concatenation
    self.out = nn.Conv2d(cin, out_channels, 3, padding=1, bias=True)

  def forward(self, x):
    feats = []
    for block in self.down:
      x = F.leaky_relu(block(x), 0.1)
      feats.append(x)
    for j, block in enumerate(self.up):
      x = torch.cat([F.leaky_relu(block(x), 0.1), feats[-2 - j]], dim=1)
    x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
    return torch.tanh(self.out(x))


@torch.no_grad()
def init_weights(module):
  """Xavier-normal (transposed) conv weights, as the fsjax init (biases keep torch's)."""
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.xavier_normal_(m.weight)
  return module


def _np(t):
  return t.detach().cpu().numpy().astype(np.float32)


def _bn(m, params, stats, name):
  params[name] = {'scale': _np(m.weight), 'bias': _np(m.bias)}
  stats[name] = {'mean': _np(m.running_mean), 'var': _np(m.running_var)}


def hear_net_to_flax(model: HEARNet) -> dict:
  """HEARNet -> {'params', 'batch_stats'} of fsjax HEARNet (float32 numpy arrays).

  Conv (O, I, kh, kw) -> (kh, kw, I, O); ConvTranspose (I, O, kh, kw) -> (kh, kw, O, I), the
  layout of cpu_conv.conv_transpose (the kernel of the strided conv being transposed: no
  flip); BatchNorm weight/bias -> scale/bias, running_mean/var -> mean/var.
  """
  params, stats = {}, {}
  for i, block in enumerate(model.down):
    conv = block[0]
    params[f'down{i}_conv'] = {'kernel': np.transpose(_np(conv.weight), (2, 3, 1, 0)),
                               'bias': _np(conv.bias)}
    _bn(block[1], params, stats, f'down{i}_bn')
  for j, block in enumerate(model.up):
    conv = block[0]
    params[f'up{j}_conv'] = {'kernel': np.transpose(_np(conv.weight), (2, 3, 1, 0)),
                             'bias': _np(conv.bias)}
    _bn(block[1], params, stats, f'up{j}_bn')
  params['out_conv'] = {'kernel': np.transpose(_np(model.out.weight), (2, 3, 1, 0)),
                        'bias': _np(model.out.bias)}
  return {'params': params, 'batch_stats': stats}


def count_params(module):
  """Trainable parameter count (BatchNorm running statistics excluded)."""
  return sum(p.numel() for p in module.parameters())
