"""Copies a reference (arcface_torch layout) IResNet state_dict into Flax IResNet variables.

Deliberately written apart from fsjax/arcface_convert.py so the parity tests check the
Flax layout against a second, plain implementation of the mapping.
"""

import numpy as np


def _np(t):
  return t.detach().cpu().numpy().astype(np.float32)


def _conv(w):
  return np.transpose(_np(w), (2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)


def _bn(sd, prefix, params, stats, name, scale=True):
  params[name] = {'bias': _np(sd[prefix + '.bias'])}
  if scale:
    params[name]['scale'] = _np(sd[prefix + '.weight'])
  stats[name] = {'mean': _np(sd[prefix + '.running_mean']),
                 'var': _np(sd[prefix + '.running_var'])}


def torch_to_flax(model):
  """Reference torch IResNet -> {'params', 'batch_stats'} nested dicts of numpy arrays."""
  sd = model.state_dict()
  params, stats = {}, {}
  params['conv1'] = {'kernel': _conv(sd['conv1.weight'])}
  _bn(sd, 'bn1', params, stats, 'bn1')
  params['prelu'] = {'negative_slope': _np(sd['prelu.weight'])}
  stage = 1
  while f'layer{stage}.0.bn1.weight' in sd:
    i = 0
    while f'layer{stage}.{i}.bn1.weight' in sd:
      pre = f'layer{stage}.{i}'
      bp, bs = {}, {}
      for bn in ('bn1', 'bn2', 'bn3'):
        _bn(sd, f'{pre}.{bn}', bp, bs, bn)
      bp['conv1'] = {'kernel': _conv(sd[f'{pre}.conv1.weight'])}
      bp['conv2'] = {'kernel': _conv(sd[f'{pre}.conv2.weight'])}
      bp['prelu'] = {'negative_slope': _np(sd[f'{pre}.prelu.weight'])}
      if f'{pre}.downsample.0.weight' in sd:
        bp['downsample_conv'] = {'kernel': _conv(sd[f'{pre}.downsample.0.weight'])}
        _bn(sd, f'{pre}.downsample.1', bp, bs, 'downsample_bn')
      params[f'layer{stage}_{i}'] = bp
      stats[f'layer{stage}_{i}'] = bs
      i += 1
    stage += 1
  _bn(sd, 'bn2', params, stats, 'bn2')
  params['fc'] = {'kernel': _np(sd['fc.weight']).T, 'bias': _np(sd['fc.bias'])}
  assert np.all(_np(sd['features.weight']) == 1.0), 'features.weight must be frozen at 1'
  _bn(sd, 'features', params, stats, 'features', scale=False)
  return {'params': params, 'batch_stats': stats}
