"""Converts pretrained ArcFace IResNet weights (arcface_torch .pth, InsightFace ONNX) to fsjax.

Both inputs are first brought to one torch-named, NCHW state dict (arcface_torch names:
conv1, bn1, prelu, layerS.i.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}, bn2,
fc, features) whose BatchNorm statistics use a single epsilon; `state_dict_to_flax` then
maps it strictly (missing, unexpected or mis-shaped keys are errors naming the key) to the
Flax variables of fsjax.models.arcface.IResNet:

  conv (O, I, kh, kw) -> kernel (kh, kw, I, O);  fc (D, C*7*7) -> kernel (C*7*7, D)
  (the Flax model flattens in C, H, W order);  BN weight/bias/running_* -> scale/bias/mean/var;
  PReLU weight -> negative_slope;  features.weight must be 1 (else folded into var).

ONNX graphs are read by structure (fsjax/identity/convert_onnx.py).

Verification: the source model (a torch.nn.functional forward of the .pth state dict, or
the ONNX file through onnx.reference.ReferenceEvaluator) and the converted Flax model embed
the same random inputs; the worst cosine must exceed 0.9999.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any, Callable

import numpy as np

from fsjax.data import paths
from fsjax.identity import checkpoint as identity_lib
from fsjax.identity import convert_onnx
from fsjax.identity.errors import ConversionError
from fsjax.models import arcface

MIN_COSINE = 0.9999


# ------------------------------------------------------------------------------------------
# The common torch-named state dict.


def expected_shapes(layers, width: int, embedding_dim: int) -> dict[str, tuple[int, ...]]:
  """arcface_torch state_dict key -> shape, in module order (num_batches_tracked excluded)."""
  shapes = {}

  def bn(prefix, c):
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
      shapes[f'{prefix}.{name}'] = (c,)

  shapes['conv1.weight'] = (width, 3, 3, 3)
  bn('bn1', width)
  shapes['prelu.weight'] = (width,)
  cin = width
  for s, blocks in enumerate(layers):
    cout = width * 2**s
    for i in range(blocks):
      p = f'layer{s + 1}.{i}'
      bn(f'{p}.bn1', cin)
      shapes[f'{p}.conv1.weight'] = (cout, cin, 3, 3)
      bn(f'{p}.bn2', cout)
      shapes[f'{p}.prelu.weight'] = (cout,)
      shapes[f'{p}.conv2.weight'] = (cout, cout, 3, 3)
      bn(f'{p}.bn3', cout)
      if i == 0:
        shapes[f'{p}.downsample.0.weight'] = (cout, cin, 1, 1)
        bn(f'{p}.downsample.1', cout)
      cin = cout
  bn('bn2', cin)
  shapes['fc.weight'] = (embedding_dim, cin * 7 * 7)
  shapes['fc.bias'] = (embedding_dim,)
  bn('features', embedding_dim)
  return shapes


def layout_from_state_dict(sd: dict[str, np.ndarray]) -> tuple[tuple[int, ...], int, int]:
  """(layers, width, embedding_dim) detected from arcface_torch keys and shapes."""
  for key in ('conv1.weight', 'fc.weight'):
    if key not in sd:
      raise ConversionError(f'missing key {key!r}: not an arcface_torch IResNet state dict')
  blocks = collections.defaultdict(set)
  for key in sd:
    m = re.match(r'layer(\d+)\.(\d+)\.', key)
    if m:
      blocks[int(m.group(1))].add(int(m.group(2)))
  if sorted(blocks) != [1, 2, 3, 4]:
    raise ConversionError(f'expected stages layer1..layer4, found {sorted(blocks)}')
  layers = []
  for s in range(1, 5):
    n = max(blocks[s]) + 1
    missing = sorted(set(range(n)) - blocks[s])
    if missing:
      raise ConversionError(f'missing key layer{s}.{missing[0]}.*')
    layers.append(n)
  return tuple(layers), int(sd['conv1.weight'].shape[0]), int(sd['fc.weight'].shape[0])


def check_state_dict(sd: dict[str, np.ndarray], layers, width: int, embedding_dim: int):
  """Raises ConversionError naming the first missing, unexpected or mis-shaped key."""
  want = expected_shapes(layers, width, embedding_dim)
  for key, shape in want.items():
    if key not in sd:
      raise ConversionError(f'missing key {key!r}')
    if tuple(sd[key].shape) != shape:
      raise ConversionError(f'shape mismatch for key {key!r}: got {tuple(sd[key].shape)}, '
                            f'expected {shape}')
  for key in sd:
    if key not in want and not key.endswith('num_batches_tracked'):
      raise ConversionError(f'unexpected key {key!r}')


def fold_feature_scale(sd: dict[str, np.ndarray], eps: float) -> tuple[dict, bool]:
  """Makes features.weight 1 (its Flax BN has no scale), keeping the function exact.

  (y - m) g / sqrt(v + eps) = (s y - s m) / sqrt(v' + eps) with s = sign(g),
  v' = (v + eps) / g^2 - eps. Returns (new sd, whether anything changed).
  """
  g = sd['features.weight'].astype(np.float64)
  if np.all(g == 1.0):
    return sd, False
  if np.any(np.abs(g) < 1e-12):
    raise ConversionError("key 'features.weight' has zeros; cannot fold it into the variance")
  sd = dict(sd)
  sign = np.sign(g)
  sd['fc.weight'] = (sd['fc.weight'] * sign[:, None]).astype(np.float32)
  sd['fc.bias'] = (sd['fc.bias'] * sign).astype(np.float32)
  sd['features.running_mean'] = (sd['features.running_mean'] * sign).astype(np.float32)
  var = (sd['features.running_var'].astype(np.float64) + eps) / g**2 - eps
  sd['features.running_var'] = var.astype(np.float32)
  sd['features.weight'] = np.ones_like(sd['features.weight'])
  return sd, True


def state_dict_to_flax(sd: dict[str, np.ndarray], layers, width: int,
                       embedding_dim: int) -> dict[str, Any]:
  """Checked arcface_torch state dict -> Flax {'params', 'batch_stats'} (numpy float32)."""
  check_state_dict(sd, layers, width, embedding_dim)
  if not np.all(sd['features.weight'] == 1.0):
    raise ConversionError("key 'features.weight' must be 1 (call fold_feature_scale first)")
  def f32(a):
    return np.ascontiguousarray(a, np.float32)

  def conv(key):
    return {'kernel': f32(np.transpose(sd[key], (2, 3, 1, 0)))}

  def bn(prefix, scale=True):
    p = {'bias': f32(sd[prefix + '.bias'])}
    if scale:
      p['scale'] = f32(sd[prefix + '.weight'])
    return p, {'mean': f32(sd[prefix + '.running_mean']), 'var': f32(sd[prefix + '.running_var'])}

  params, stats = {}, {}
  params['conv1'] = conv('conv1.weight')
  params['bn1'], stats['bn1'] = bn('bn1')
  params['prelu'] = {'negative_slope': f32(sd['prelu.weight'])}
  for s, blocks in enumerate(layers):
    for i in range(blocks):
      p, name = f'layer{s + 1}.{i}', f'layer{s + 1}_{i}'
      bp, bs = {}, {}
      for b in ('bn1', 'bn2', 'bn3'):
        bp[b], bs[b] = bn(f'{p}.{b}')
      bp['conv1'] = conv(f'{p}.conv1.weight')
      bp['conv2'] = conv(f'{p}.conv2.weight')
      bp['prelu'] = {'negative_slope': f32(sd[f'{p}.prelu.weight'])}
      if i == 0:
        bp['downsample_conv'] = conv(f'{p}.downsample.0.weight')
        bp['downsample_bn'], bs['downsample_bn'] = bn(f'{p}.downsample.1')
      params[name], stats[name] = bp, bs
  params['bn2'], stats['bn2'] = bn('bn2')
  params['fc'] = {'kernel': f32(sd['fc.weight'].T), 'bias': f32(sd['fc.bias'])}
  params['features'], stats['features'] = bn('features', scale=False)
  return {'params': params, 'batch_stats': stats}


# ------------------------------------------------------------------------------------------
# arcface_torch .pth


def import_torch():
  """The torch module, or ConversionError saying how to install it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError("PyTorch is needed for .pth files: pip install 'fsjax[torch]'") from e
  return torch


def load_pth(path: str) -> dict[str, np.ndarray]:
  """Reads a backbone.pth (weights only: no pickled code) -> {key: float32 numpy array}.

  Accepts a plain state dict or one nested under 'state_dict'/'model'; strips a
  DataParallel 'module.' prefix.
  """
  torch = import_torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(f'cannot read {path} as a weights-only torch file: '
                          f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
  for nest in ('state_dict', 'model', 'backbone'):
    if isinstance(obj, dict) and nest in obj and isinstance(obj[nest], dict):
      obj = obj[nest]
  if not isinstance(obj, dict):
    raise ConversionError(f'{path}: expected a state dict, got {type(obj).__name__}')
  if obj and all(k.startswith('module.') for k in obj):
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  sd = {}
  for k, v in obj.items():
    if not hasattr(v, 'detach'):
      raise ConversionError(f'key {k!r} is not a tensor ({type(v).__name__})')
    sd[k] = v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
  return sd


def torch_forward(sd: dict[str, np.ndarray], layers, eps: float, x: np.ndarray) -> np.ndarray:
  """Reference forward (torch.nn.functional) of an arcface_torch state dict.

  Args:
    sd: state dict as numpy arrays.
    layers: blocks per stage.
    eps: BatchNorm epsilon.
    x: [B, 112, 112, 3] float32 in [-1, 1].

  Returns:
    [B, D] float32 embeddings (eval mode, not normalised).
  """
  torch = import_torch()
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name
  t = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()
       if not k.endswith('num_batches_tracked')}

  def bn(h, p):
    return F.batch_norm(h, t[p + '.running_mean'], t[p + '.running_var'], t[p + '.weight'],
                        t[p + '.bias'], False, 0.0, eps)

  with torch.no_grad():
    h = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32))
    h = F.prelu(bn(F.conv2d(h, t['conv1.weight'], padding=1), 'bn1'), t['prelu.weight'])
    for s, blocks in enumerate(layers):
      for i in range(blocks):
        p, stride = f'layer{s + 1}.{i}', 2 if i == 0 else 1
        y = F.conv2d(bn(h, p + '.bn1'), t[p + '.conv1.weight'], padding=1)
        y = F.prelu(bn(y, p + '.bn2'), t[p + '.prelu.weight'])
        y = bn(F.conv2d(y, t[p + '.conv2.weight'], stride=stride, padding=1), p + '.bn3')
        if i == 0:
          h = bn(F.conv2d(h, t[p + '.downsample.0.weight'], stride=stride), p + '.downsample.1')
        h = y + h
    h = torch.flatten(bn(h, 'bn2'), 1)
    h = bn(F.linear(h, t['fc.weight'], t['fc.bias']), 'features')
  return h.numpy()


# ------------------------------------------------------------------------------------------
# Conversion entry point.


def detect_format(path: str) -> str:
  """'onnx' or 'pth' from the file's contents (ONNX protobuf vs torch zip/pickle)."""
  with open(path, 'rb') as f:
    head = f.read(4)
  if head.startswith(b'PK') or head[:1] == b'\x80':
    return 'pth'
  ext = os.path.splitext(path)[1].lower()
  if ext == '.onnx':
    return 'onnx'
  if ext in ('.pth', '.pt', '.bin'):
    return 'pth'
  return 'onnx'


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
  """min over rows of cos(a_i, b_i) for [B, D] arrays."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
  return float(cos.min())


def convert(src: str, out_dir: str, *, verify: bool = True, bn_eps: float = 1e-5,
            alignment: str = 'arcface', overwrite: bool = False, num_verify: int = 4,
            seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Converts SRC (.pth or .onnx) into an fsjax identity checkpoint at OUT_DIR.

  Args:
    src: arcface_torch backbone.pth or InsightFace ONNX recognizer.
    out_dir: output directory (identity.json + Orbax variables); written atomically, and not
      at all when anything fails.
    verify: compare the source and converted models on `num_verify` random inputs
      ([num_verify, 112, 112, 3] uniform in [-1, 1]); fail if the worst cosine <= 0.9999.
    bn_eps: BatchNorm epsilon for .pth files (arcface_torch: 1e-5; not stored in the file).
      ONNX files carry their own.
    alignment: face alignment the weights expect ('arcface' for InsightFace models).
    overwrite: replace an existing OUT_DIR that is an earlier identity checkpoint (has
      identity.json); nothing else is ever replaced.
    num_verify: number of random verification inputs.
    seed: seed of the verification inputs.
    log: progress printer.

  Returns:
    identity.json dict (with 'verification': {'worst_cosine', 'num_inputs'} when verified).

  Raises:
    ConversionError: unreadable input, missing/unexpected/mis-shaped key, failed verification.
    paths.OutputError: OUT_DIR is or contains SRC, exists without `overwrite`, or is not an
      earlier identity checkpoint (checked before anything is read).
  """
  import jax  # pylint: disable=g-import-not-at-top

  src = paths.absolute(src)
  if not os.path.isfile(src):
    raise ConversionError(f'{src}: no such file')
  out_dir = paths.check_output_dir(out_dir, [src], marker=identity_lib.META_FILE,
                                   kind='identity checkpoint', overwrite=overwrite)
  fmt = detect_format(src)
  raw_input = False
  if fmt == 'pth':
    original = load_pth(src)
    layers, width, dim = layout_from_state_dict(original)
    check_state_dict(original, layers, width, dim)
    eps = float(bn_eps)
    sd, folded = fold_feature_scale(original, eps)
    if folded:
      log('note: features.weight != 1 was folded into features.running_var')
  else:
    sd, layers, width, dim, eps, raw_input = convert_onnx.load_onnx(src)
    sd, _ = fold_feature_scale(sd, eps)
    original = None
  variables = state_dict_to_flax(sd, layers, width, dim)
  meta = identity_lib.make_meta(layers, width, dim, eps, alignment=alignment,
                                source={'file': os.path.basename(src), 'format': fmt})
  log(f'{src}: {fmt}, IResNet {meta["arch"]} layers={list(layers)} width={width} '
      f'embedding={dim} bn_eps={eps:g}' + (' (input preprocessing folded)' if raw_input else ''))
  module = identity_lib.module_from_meta(meta)
  identity_lib.check_variables(variables, module)

  if verify:
    x = np.random.RandomState(seed).uniform(
        -1, 1, (num_verify, arcface.INPUT_SIZE, arcface.INPUT_SIZE, 3)).astype(np.float32)
    if fmt == 'pth':
      want = torch_forward(original, layers, eps, x)
      ref = 'torch'
    else:
      want = convert_onnx.onnx_forward(src, x, raw_input)
      ref = 'onnx'
    got = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
    cos = worst_cosine(got, want)
    log(f'verification: worst cosine flax vs {ref} over {num_verify} random inputs = {cos:.8f} '
        f'(1 - cos = {1 - cos:.1e})')
    if not cos > MIN_COSINE:
      raise ConversionError(f'verification failed: worst cosine {cos:.6f} <= {MIN_COSINE}')
    meta['verification'] = {'reference': ref, 'worst_cosine': cos, 'num_inputs': num_verify}
  path = identity_lib.save_identity(out_dir, variables, meta, overwrite=overwrite, inputs=[src])
  log(f'wrote {path}')
  return meta
