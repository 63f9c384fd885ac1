"""Plain PyTorch (NCHW) AEI-Net written from shared/design/faceshifter.md, for parity and bench.

Same switches as fsjax (norm 'instance'|'batch', att kernel 1|3, mask 'one'|'full',
conv_bias). Weight init as taotaonice/FaceShifter: conv / transposed conv xavier-normal,
Linear N(0, 0.001) with zero bias (call `init_weights`; construction alone keeps the
PyTorch defaults, so models can be built on the 'meta' device for counting).
"""

import torch
from torch import nn
import torch.nn.functional as F


def _lrelu(x):
  return F.leaky_relu(x, 0.1)


class AttrEncoder(nn.Module):
  """U-Net attribute encoder: returns the list of z_att levels, smallest first."""

  def __init__(self, channels=(32, 64, 128, 256, 512, 1024, 1024)):
    super().__init__()
    self.down = nn.ModuleList()
    cin = 3
    for c in channels:
      self.down.append(nn.Sequential(
          nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c)))
      cin = c
    self.up = nn.ModuleList()
    for c in reversed(channels[:-1]):
      self.up.append(nn.Sequential(
          nn.ConvTranspose2d(cin, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c)))
      cin = 2 * c

  def forward(self, x):
    feats = []
    for block in self.down:
      x = _lrelu(block(x))
      feats.append(x)
    z = [x]
    for j, block in enumerate(self.up):
      x = torch.cat([_lrelu(block(x)), feats[-2 - j]], dim=1)
      z.append(x)
    z.append(F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True))
    return z


class AADLayer(nn.Module):
  """AAD: h = norm(h); out = (1 - M) * (g_att * h + b_att) + M * (g_id * h + b_id).

  M = sigmoid(conv(h)), the mask conv having the attribute convs' kernel size.
  """

  def __init__(self, c_h, c_att, c_id, norm='instance', att_kernel=1, mask_channels='one'):
    super().__init__()
    if norm == 'instance':
      self.norm = nn.InstanceNorm2d(c_h, affine=False, eps=1e-5)
    elif norm == 'batch':
      self.norm = nn.BatchNorm2d(c_h)
    else:
      raise ValueError(norm)
    pad = att_kernel // 2
    self.att_gamma = nn.Conv2d(c_att, c_h, att_kernel, padding=pad)
    self.att_beta = nn.Conv2d(c_att, c_h, att_kernel, padding=pad)
    self.id_gamma = nn.Linear(c_id, c_h)
    self.id_beta = nn.Linear(c_id, c_h)
    self.mask = nn.Conv2d(c_h, 1 if mask_channels == 'one' else c_h, att_kernel, padding=pad)

  def forward(self, h, z_att, z_id):
    h = self.norm(h)
    a = self.att_gamma(z_att) * h + self.att_beta(z_att)
    i = self.id_gamma(z_id)[:, :, None, None] * h + self.id_beta(z_id)[:, :, None, None]
    m = torch.sigmoid(self.mask(h))
    return (1 - m) * a + m * i


class AADResBlk(nn.Module):
  """AAD -> ReLU -> conv3x3 -> AAD -> ReLU -> conv3x3, plus an (AAD -> ReLU -> conv) skip."""

  def __init__(self, cin, cout, c_att, c_id, conv_bias=False, **aad_kwargs):
    super().__init__()
    self.aad1 = AADLayer(cin, c_att, c_id, **aad_kwargs)
    self.conv1 = nn.Conv2d(cin, cin, 3, padding=1, bias=conv_bias)
    self.aad2 = AADLayer(cin, c_att, c_id, **aad_kwargs)
    self.conv2 = nn.Conv2d(cin, cout, 3, padding=1, bias=conv_bias)
    self.has_skip = cin != cout
    if self.has_skip:
      self.aad3 = AADLayer(cin, c_att, c_id, **aad_kwargs)
      self.conv3 = nn.Conv2d(cin, cout, 3, padding=1, bias=conv_bias)

  def forward(self, h, z_att, z_id):
    y = self.conv1(F.relu(self.aad1(h, z_att, z_id)))
    y = self.conv2(F.relu(self.aad2(y, z_att, z_id)))
    if self.has_skip:
      h = self.conv3(F.relu(self.aad3(h, z_att, z_id)))
    return y + h


def attr_channels_of(channels):
  """z_att channel counts (smallest level first) of AttrEncoder(channels)."""
  out = [channels[-1]] + [2 * c for c in reversed(channels[:-1])]
  return out + [out[-1]]


class AADGenerator(nn.Module):
  """z_id -> ConvTranspose(k2) 2x2 -> ResBlks with bilinear x2 in between -> tanh."""

  def __init__(self, gen_channels=(1024, 1024, 1024, 1024, 512, 256, 128, 64),
               att_channels=(1024, 2048, 1024, 512, 256, 128, 64, 64), c_id=512,
               conv_bias=False, **aad_kwargs):
    super().__init__()
    self.up1 = nn.ConvTranspose2d(c_id, gen_channels[0], 2, stride=1, padding=0)
    outs = list(gen_channels[1:]) + [3]
    self.blocks = nn.ModuleList(
        AADResBlk(ci, co, ca, c_id, conv_bias=conv_bias, **aad_kwargs)
        for ci, co, ca in zip(gen_channels, outs, att_channels))

  def forward(self, z_att, z_id):
    h = self.up1(z_id[:, :, None, None])
    for k, block in enumerate(self.blocks):
      h = block(h, z_att[k], z_id)
      if k < len(self.blocks) - 1:
        h = F.interpolate(h, scale_factor=2, mode='bilinear', align_corners=True)
    return torch.tanh(h)


class AEINet(nn.Module):
  """Attribute encoder + AAD generator. forward(x_t, z_id) -> (y, z_att list)."""

  def __init__(self, attr_channels=(32, 64, 128, 256, 512, 1024, 1024),
               gen_channels=(1024, 1024, 1024, 1024, 512, 256, 128, 64), id_dim=512,
               aad_norm='instance', aad_att_kernel=1, aad_mask_channels='one',
               conv_bias=False):
    super().__init__()
    self.encoder = AttrEncoder(attr_channels)
    self.generator = AADGenerator(
        gen_channels, attr_channels_of(attr_channels), id_dim, conv_bias=conv_bias,
        norm=aad_norm, att_kernel=aad_att_kernel, mask_channels=aad_mask_channels)

  def get_attr(self, x):
    return self.encoder(x)

  def forward(self, x_t, z_id):
    z_att = self.encoder(x_t)
    return self.generator(z_att, z_id), z_att


def from_model_config(model_config):
  """AEINet from an fsjax config.model."""
  return AEINet(tuple(model_config.attr_channels), tuple(model_config.gen_channels),
                model_config.id_dim, model_config.aad_norm, model_config.aad_att_kernel,
                model_config.aad_mask_channels, model_config.conv_bias)


@torch.no_grad()
def init_weights(module):
  """taotaonice init: Linear N(0, 0.001) + zero bias; (transposed) convs xavier-normal."""
  for m in module.modules():
    if isinstance(m, nn.Linear):
      m.weight.normal_(0, 0.001)
      m.bias.zero_()
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.xavier_normal_(m.weight)
  return module


def count_params(module):
  """Trainable parameter count (buffers such as BN running stats excluded)."""
  return sum(p.numel() for p in module.parameters())
