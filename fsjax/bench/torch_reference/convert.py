"""Copies the torch reference AEI-Net / discriminator weights into fsjax Flax variable dicts.

Every function returns {'params': ..., 'batch_stats': ...} (batch_stats empty when the
module has no BatchNorm) as nested dicts of float32 numpy arrays. Layouts:
conv (O, I, kh, kw) -> (kh, kw, I, O); transposed conv (I, O, kh, kw) -> (kh, kw, O, I)
(Flax ConvTranspose with transpose_kernel=True flips the kernel itself); Linear (O, I) -> (I, O);
BatchNorm weight/bias -> scale/bias, running_mean/var -> mean/var.
"""

import numpy as np
import torch
from torch import nn


def _np(t):
  return t.detach().cpu().numpy().astype(np.float32)


def _conv(m: nn.Conv2d) -> dict:
  out = {'kernel': np.transpose(_np(m.weight), (2, 3, 1, 0))}
  if m.bias is not None:
    out['bias'] = _np(m.bias)
  return out


def _conv_transpose(m: nn.ConvTranspose2d) -> dict:
  out = {'kernel': np.transpose(_np(m.weight), (2, 3, 1, 0))}
  if m.bias is not None:
    out['bias'] = _np(m.bias)
  return out


def _dense(m: nn.Linear) -> dict:
  return {'kernel': _np(m.weight).T, 'bias': _np(m.bias)}


def _bn(m: nn.BatchNorm2d, params: dict, stats: dict, name: str):
  params[name] = {'scale': _np(m.weight), 'bias': _np(m.bias)}
  stats[name] = {'mean': _np(m.running_mean), 'var': _np(m.running_var)}


def _variables(params, stats):
  return {'params': params, 'batch_stats': stats}


def attr_encoder_to_flax(enc) -> dict:
  """aei.AttrEncoder -> variables of fsjax AttributeEncoder."""
  params, stats = {}, {}
  for i, block in enumerate(enc.down):
    params[f'down{i}_conv'] = _conv(block[0])
    _bn(block[1], params, stats, f'down{i}_bn')
  for j, block in enumerate(enc.up):
    params[f'up{j}_conv'] = _conv_transpose(block[0])
    _bn(block[1], params, stats, f'up{j}_bn')
  return _variables(params, stats)


def aad_layer_to_flax(layer) -> dict:
  """aei.AADLayer -> variables of fsjax AADLayer."""
  params, stats = {}, {}
  if isinstance(layer.norm, nn.BatchNorm2d):
    _bn(layer.norm, params, stats, 'norm')
  for name in ('att_gamma', 'att_beta', 'mask'):
    params[name] = _conv(getattr(layer, name))
  for name in ('id_gamma', 'id_beta'):
    params[name] = _dense(getattr(layer, name))
  return _variables(params, stats)


def aad_resblk_to_flax(blk) -> dict:
  """aei.AADResBlk -> variables of fsjax AADResBlock."""
  params, stats = {}, {}
  pairs = [('aad1', 'aad1', 'conv1', 'conv1'), ('aad2', 'aad2', 'conv2', 'conv2')]
  if blk.has_skip:
    pairs.append(('aad3', 'aad_skip', 'conv3', 'conv_skip'))
  for t_aad, f_aad, t_conv, f_conv in pairs:
    sub = aad_layer_to_flax(getattr(blk, t_aad))
    params[f_aad] = sub['params']
    if sub['batch_stats']:
      stats[f_aad] = sub['batch_stats']
    params[f_conv] = _conv(getattr(blk, t_conv))
  return _variables(params, stats)


def generator_to_flax(gen) -> dict:
  """aei.AADGenerator -> variables of fsjax AADGenerator."""
  params, stats = {'id_proj': _conv_transpose(gen.up1)}, {}
  for i, blk in enumerate(gen.blocks):
    sub = aad_resblk_to_flax(blk)
    params[f'block{i}'] = sub['params']
    if sub['batch_stats']:
      stats[f'block{i}'] = sub['batch_stats']
  return _variables(params, stats)


def aei_net_to_flax(model) -> dict:
  """aei.AEINet -> variables of fsjax AEINet."""
  enc = attr_encoder_to_flax(model.encoder)
  gen = generator_to_flax(model.generator)
  stats = {'encoder': enc['batch_stats']}
  if gen['batch_stats']:
    stats['generator'] = gen['batch_stats']
  return _variables({'encoder': enc['params'], 'generator': gen['params']}, stats)


def discriminator_to_flax(model) -> dict:
  """discriminator.MultiscaleDiscriminator -> variables of fsjax MultiscaleDiscriminator."""
  params, stats = {}, {}
  for k, d in enumerate(model.scales):
    p, s = {}, {}
    convs = [m for m in d.model if isinstance(m, nn.Conv2d)]
    for i, m in enumerate(convs):
      p[f'conv{i}'] = _conv(m)
    bns = [m for m in d.model if isinstance(m, nn.BatchNorm2d)]
    for i, m in enumerate(bns, start=1):
      _bn(m, p, s, f'norm{i}')
    params[f'scale{k}'] = p
    if s:
      stats[f'scale{k}'] = s
  return _variables(params, stats)


def randomize_batch_norm(model, seed: int = 0):
  """Non-trivial BatchNorm2d affine parameters and running statistics (num_batches_tracked
  1000), so eval-mode parity really tests them; returns `model`."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(0.1 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
        m.num_batches_tracked.fill_(1000)
  return model
