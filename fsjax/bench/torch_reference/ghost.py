"""Plain PyTorch (NCHW) GHOST (ai-forever/sber-swap) AEI-Net and discriminator, for parity.

Written from shared/design/ghost.md: module names are chosen so that `state_dict()` has
exactly the keys of GHOST's released `G_unet_{1,2,3}block(s).pth` / `D_unet_*.pth` files
('unet' backbone):

  encoder.conv{1..7}.{0: Conv 4x4 s2, 1: BatchNorm}        encoder.deconv{1..6}.{deconv, bn}
  generator.up1                                            (ConvTranspose k2, 512 -> 1024)
  generator.AADBlk{1..8}.add_blocks.{3i: AAD, 3i+2: Conv3x3}   i = 0 .. num_blocks - 1
  generator.AADBlk{k}.last_add_block.{0: AAD, 2: Conv3x3}      only where cin != cout
  AAD layer: conv1 / conv2 (gamma / beta of z_att, 1x1), fc1 / fc2 (gamma / beta of z_id),
             conv_h (1-channel mask, 1x1); its InstanceNorm has no state.
  discriminator: layer{0..num_D-1}.{j} (pix2pixHD NLayerDiscriminator, flat Sequential).

The widths are arguments so that tests can run the same key structure tiny. Build on the
'meta' device to count parameters of the full-size models. `verify` runs a converted fsjax
generator beside this reference (`fsjax convert-generator` calls it).
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

ATTR_CHANNELS = (32, 64, 128, 256, 512, 1024, 1024)
GEN_CHANNELS = (1024, 1024, 1024, 1024, 512, 256, 128, 64)


class AADLayer(nn.Module):
  """out = (1 - M) * (conv1(z_att) * h + conv2(z_att)) + M * (fc1(z_id) * h + fc2(z_id)),

  h = InstanceNorm(h_in), M = sigmoid(conv_h(h)).
  """

  def __init__(self, c_x, attr_c, c_id=512):
    super().__init__()
    self.conv1 = nn.Conv2d(attr_c, c_x, 1, bias=True)
    self.conv2 = nn.Conv2d(attr_c, c_x, 1, bias=True)
    self.fc1 = nn.Linear(c_id, c_x)
    self.fc2 = nn.Linear(c_id, c_x)
    self.norm = nn.InstanceNorm2d(c_x, affine=False, eps=1e-5)
    self.conv_h = nn.Conv2d(c_x, 1, 1, bias=True)

  def forward(self, h_in, z_att, z_id):
    h = self.norm(h_in)
    a = self.conv1(z_att) * h + self.conv2(z_att)
    i = self.fc1(z_id)[:, :, None, None] * h + self.fc2(z_id)[:, :, None, None]
    m = torch.sigmoid(self.conv_h(h))
    return (1 - m) * a + m * i


class AADSequential(nn.Sequential):
  """A Sequential whose AAD layers also receive (z_att, z_id)."""

  def forward(self, h, z_att, z_id):  # pylint: disable=arguments-differ
    for module in self:
      h = module(h, z_att, z_id) if isinstance(module, AADLayer) else module(h)
    return h


def _unit(cin, cout, c_attr, c_id):
  return [AADLayer(cin, c_attr, c_id), nn.ReLU(),
          nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False)]


class AADResBlk(nn.Module):
  """num_blocks units [AAD -> ReLU -> Conv3x3] (the last cin -> cout) + shortcut."""

  def __init__(self, cin, cout, c_attr, c_id=512, num_blocks=2):
    super().__init__()
    self.cin, self.cout = cin, cout
    units = []
    for i in range(num_blocks):
      units += _unit(cin, cout if i == num_blocks - 1 else cin, c_attr, c_id)
    self.add_blocks = AADSequential(*units)
    if cin != cout:
      self.last_add_block = AADSequential(*_unit(cin, cout, c_attr, c_id))

  def forward(self, h, z_att, z_id):
    x = self.add_blocks(h, z_att, z_id)
    if self.cin != self.cout:
      h = self.last_add_block(h, z_att, z_id)
    return x + h


class Deconv(nn.Module):
  """ConvTranspose 4x4 s2 p1 (no bias) -> BN -> LReLU(0.1), concatenated with the skip."""

  def __init__(self, cin, cout):
    super().__init__()
    self.deconv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)
    self.bn = nn.BatchNorm2d(cout)
    self.lrelu = nn.LeakyReLU(0.1)

  def forward(self, x, skip):
    return torch.cat([self.lrelu(self.bn(self.deconv(x))), skip], dim=1)


class MLAttrEncoder(nn.Module):
  """U-Net attribute encoder; forward returns the z_att levels, smallest first."""

  def __init__(self, channels=ATTR_CHANNELS):
    super().__init__()
    self.n = len(channels)
    cin = 3
    for k, c in enumerate(channels, start=1):
      setattr(self, f'conv{k}', nn.Sequential(
          nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
          nn.LeakyReLU(0.1)))
      cin = c
    for k, c in enumerate(reversed(channels[:-1]), start=1):
      setattr(self, f'deconv{k}', Deconv(cin, c))
      cin = 2 * c

  def forward(self, x):
    feats = []
    for k in range(1, self.n + 1):
      x = getattr(self, f'conv{k}')(x)
      feats.append(x)
    z = [x]
    for k in range(1, self.n):
      x = getattr(self, f'deconv{k}')(x, feats[-1 - k])
      z.append(x)
    z.append(F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True))
    return z


def attr_channels_of(channels):
  """z_att channel counts (smallest level first) of MLAttrEncoder(channels)."""
  out = [channels[-1]] + [2 * c for c in reversed(channels[:-1])]
  return out + [out[-1]]


class AADGenerator(nn.Module):
  """z_id -> up1 (2x2) -> AADBlk1..N with bilinear x2 between them -> tanh."""

  def __init__(self, gen_channels=GEN_CHANNELS, att_channels=None, c_id=512, num_blocks=2):
    super().__init__()
    att_channels = att_channels or attr_channels_of(ATTR_CHANNELS)
    self.n = len(gen_channels)
    self.up1 = nn.ConvTranspose2d(c_id, gen_channels[0], 2, stride=1, padding=0)
    outs = list(gen_channels[1:]) + [3]
    for k, (ci, co, ca) in enumerate(zip(gen_channels, outs, att_channels), start=1):
      setattr(self, f'AADBlk{k}', AADResBlk(ci, co, ca, c_id, num_blocks))

  def forward(self, z_att, z_id):
    h = self.up1(z_id.reshape(z_id.shape[0], -1, 1, 1))
    for k in range(1, self.n + 1):
      h = getattr(self, f'AADBlk{k}')(h, z_att[k - 1], z_id)
      if k < self.n:
        h = F.interpolate(h, scale_factor=2, mode='bilinear', align_corners=True)
    return torch.tanh(h)


class AEI_Net(nn.Module):  # pylint: disable=invalid-name  (GHOST's class name)
  """GHOST AEI-Net ('unet' backbone). forward(x_t, z_id) -> (y, z_att list)."""

  def __init__(self, num_blocks=2, c_id=512, attr_channels=ATTR_CHANNELS,
               gen_channels=GEN_CHANNELS):
    super().__init__()
    if len(gen_channels) != len(attr_channels) + 1:
      raise ValueError('gen_channels needs len(attr_channels) + 1 entries')
    self.encoder = MLAttrEncoder(tuple(attr_channels))
    self.generator = AADGenerator(tuple(gen_channels), attr_channels_of(tuple(attr_channels)),
                                  c_id, num_blocks)

  def get_attr(self, x):
    return self.encoder(x)

  def forward(self, x_t, z_id):
    z_att = self.encoder(x_t)
    return self.generator(z_att, z_id), z_att


def _norm(kind, c):
  if kind == 'instance':
    return nn.InstanceNorm2d(c, affine=False, eps=1e-5)
  if kind == 'batch':
    return nn.BatchNorm2d(c)
  raise ValueError(kind)


def patch_layers(in_channels=3, ndf=64, n_layers=5, max_channels=512, norm='instance'):
  """The flat module list of one pix2pixHD NLayerDiscriminator (no sigmoid)."""
  kw, pad = 4, int(math.ceil((4 - 1) / 2))
  mods = [nn.Conv2d(in_channels, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2)]
  nf = ndf
  for n in range(1, n_layers + 1):
    prev, nf = nf, min(nf * 2, max_channels)
    mods += [nn.Conv2d(prev, nf, kw, stride=2 if n < n_layers else 1, padding=pad),
             _norm(norm, nf), nn.LeakyReLU(0.2)]
  mods.append(nn.Conv2d(nf, 1, kw, stride=1, padding=pad))
  return mods


class MultiscaleDiscriminator(nn.Module):
  """pix2pixHD multi-scale D as GHOST builds it (n_layers 5, InstanceNorm, num_D 3, ndf 64).

  Note pix2pixHD's order: `layer{num_D - 1}` scores the full-resolution input, `layer0` the
  most downsampled one. forward returns the logits full resolution first.
  """

  def __init__(self, input_nc=3, ndf=64, n_layers=5, num_D=3,  # pylint: disable=invalid-name
               max_channels=512, norm='instance'):
    super().__init__()
    self.num_d = num_D
    for i in range(num_D):
      setattr(self, f'layer{i}', nn.Sequential(
          *patch_layers(input_nc, ndf, n_layers, max_channels, norm)))
    self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

  def forward(self, x):
    out = []
    for i in range(self.num_d):
      out.append(getattr(self, f'layer{self.num_d - 1 - i}')(x))
      if i < self.num_d - 1:
        x = self.downsample(x)
    return out


@torch.no_grad()
def init_weights(module):
  """GHOST's weight_init: Linear N(0, 0.001) + zero bias; (transposed) convs xavier-normal."""
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


def verify(state_dict, variables=None, *, layout=None, batch: int = 2, seed: int = 0) -> float:
  """Worst |y_flax - y_torch| (outputs in [-1, 1]) of a converted GHOST generator.

  This reference model holds `state_dict` (eval mode) beside the fsjax AEINet holding the
  converted variables, on random targets in [-1, 1] and unnormalised Gaussian z_id (entries
  of order 1, like GHOST's raw ArcFace embeddings). fsjax.aei.convert.MAX_VERIFY_DIFF is the
  limit `fsjax convert-generator` enforces.

  Args:
    state_dict: GHOST generator state dict (numpy arrays or tensors).
    variables: fsjax.aei.convert.generator_to_flax's result (default: converted here).
    layout: default convert.detect_layout(state_dict).
    batch: random inputs per run.
    seed: numpy seed of the inputs.

  Raises:
    fsjax.aei.convert.ConversionError: a state dict this reference does not accept.
  """
  # Lazy: the reference models above stay importable with torch alone.
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fsjax.aei import convert  # pylint: disable=g-import-not-at-top

  sd = convert._to_numpy(state_dict)  # pylint: disable=protected-access
  layout = layout or convert.detect_layout(sd)
  if variables is None:
    variables = convert.generator_to_flax(sd, layout)
  ref = AEI_Net(layout.num_blocks, layout.id_dim, layout.attr_channels, layout.gen_channels)
  missing, unexpected = ref.load_state_dict(
      {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=False)
  missing = [k for k in missing if not k.endswith('num_batches_tracked')]
  if missing or unexpected:
    raise convert.ConversionError(f'reference model rejects the state dict: missing '
                                  f'{missing[:1]}, unexpected {unexpected[:1]}')
  ref.eval()
  rs = np.random.RandomState(seed)
  s = layout.image_size
  x = rs.uniform(-1.0, 1.0, (batch, s, s, 3)).astype(np.float32)
  z = rs.randn(batch, layout.id_dim).astype(np.float32)
  with torch.no_grad():
    y_ref = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(z))[0]
  y_ref = y_ref.numpy().transpose(0, 2, 3, 1)
  model = convert.build_generator(layout)
  run = jax.jit(lambda v, a, b: model.apply(v, a, b, False)[0])
  y = np.asarray(run({k: v for k, v in variables.items() if v}, x, z))
  return float(np.max(np.abs(y - y_ref)))
