"""Converts pretrained ArcFace IResNet weights (arcface_torch .pth, InsightFace ONNX) to fsjax.

Both inputs are first brought to one torch-named, NCHW state dict (arcface_torch names:
conv1, bn1, prelu, layerS.i.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}, bn2,
fc, features) whose BatchNorm statistics use a single epsilon; `state_dict_to_flax` then
maps it strictly (missing, unexpected or mis-shaped keys are errors naming the key) to the
Flax variables of fsjax.models.arcface.IResNet:

  conv (O, I, kh, kw) -> kernel (kh, kw, I, O);  fc (D, C*7*7) -> kernel (C*7*7, D)
  (the Flax model flattens in C, H, W order);  BN weight/bias/running_* -> scale/bias/mean/var;
  PReLU weight -> negative_slope;  features.weight must be 1 (else folded into var).

ONNX graphs are read by structure, not by initializer names: starting at the graph input,
the stem (Conv [BN] PRelu), each residual block (the Add joining [BN] Conv [BN] PRelu Conv
[BN] and the identity or 1x1 Conv [BN] shortcut) and the head ([BN] Flatten|Reshape
Gemm|MatMul+Add [BN]) are followed through the consumer graph. Exporters fold a BN that
follows a Conv into the Conv's bias (torch.onnx in eval mode does); such layers get an
identity BN whose mean absorbs the bias. Per-node epsilons (MXNet models use 2e-5) are
absorbed into the running variances (var + eps_node - eps). Leading Sub/Mul/Div/Add input
scaling (MXNet's (x - 127.5) * 0.0078125) is folded into the stem conv when it is centred
at 127.5 (the fsjax input is (x - 127.5) / 127.5).

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

MIN_COSINE = 0.9999


class ConversionError(ValueError):
  """A conversion failure; str() is one line naming the offending key or node."""


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


def _import_torch():
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
  torch = _import_torch()
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
  torch = _import_torch()
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
# InsightFace / torch-exported ONNX


_PASS_THROUGH = ('Identity', 'Dropout')


class _OnnxGraph:
  """Constant values, producers and consumers of an ONNX graph."""

  def __init__(self, model):
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
    graph = model.graph
    self.values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    self.producer, self.consumers = {}, collections.defaultdict(list)
    for node in graph.node:
      if node.op_type == 'Constant':
        for a in node.attribute:
          if a.name == 'value':
            self.values[node.output[0]] = numpy_helper.to_array(a.t)
      for o in node.output:
        self.producer[o] = node
      for i in node.input:
        if i:
          self.consumers[i].append(node)
    # Fold nodes computed from constants only (Identity of a shared initializer, Unsqueeze of
    # a PRelu slope when exported without constant folding, ...). Nodes are topologically
    # sorted (ONNX requires it), so one pass suffices.
    self.constant_nodes = set()
    opset = max([o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')] or [13])
    for node in graph.node:
      ins = [i for i in node.input if i]
      if node.op_type == 'Constant' or not ins or not all(i in self.values for i in ins):
        continue
      if node.op_type == 'Identity':
        outs = [self.values[ins[0]]]
      else:
        outs = _eval_node(node, [self.values[i] if i else None for i in node.input], opset)
      for name, value in zip(node.output, outs):
        self.values[name] = np.asarray(value)
      self.constant_nodes.add(id(node))
    self.inputs = [i for i in graph.input if i.name not in self.values]
    self.outputs = {o.name for o in graph.output}
    self.visited = set()

  def const(self, name: str, node) -> np.ndarray:
    if name not in self.values:
      raise ConversionError(f'ONNX node {node.name!r} ({node.op_type}): input {name!r} is not '
                            'a constant')
    return np.asarray(self.values[name])

  def next_nodes(self, tensor: str):
    """Consumers of `tensor`, looking through Identity/Dropout."""
    out = []
    for node in self.consumers.get(tensor, []):
      if node.op_type in _PASS_THROUGH and node.output[0] not in self.values:
        self.visited.add(id(node))
        out.extend(self.next_nodes(node.output[0]))
      else:
        out.append(node)
    return out

  def source(self, tensor: str) -> str:
    """`tensor` traced back through Identity/Dropout."""
    node = self.producer.get(tensor)
    while node is not None and node.op_type in _PASS_THROUGH:
      tensor = node.input[0]
      node = self.producer.get(tensor)
    return tensor

  def only_next(self, tensor: str, what: str):
    nodes = self.next_nodes(tensor)
    if len(nodes) != 1:
      ops = [f'{n.name or "?"}({n.op_type})' for n in nodes] or ['graph output']
      raise ConversionError(f'ONNX tensor {tensor!r}: expected one consumer ({what}), found '
                            f'{", ".join(ops)}')
    return nodes[0]

  def is_output(self, tensor: str) -> bool:
    return tensor in self.outputs or any(
        n.op_type in _PASS_THROUGH and self.is_output(n.output[0])
        for n in self.consumers.get(tensor, []))


def _eval_node(node, inputs, opset: int):
  """Evaluates one ONNX node on numpy inputs with onnx.reference."""
  from onnx import helper  # pylint: disable=g-import-not-at-top
  from onnx.reference import ReferenceEvaluator  # pylint: disable=g-import-not-at-top
  names = [f'in{i}' if n else '' for i, n in enumerate(node.input)]
  outs = [f'out{i}' for i in range(len(node.output))]
  single = helper.make_node(node.op_type, names, outs, domain=node.domain or None,
                            **{a.name: helper.get_attribute_value(a) for a in node.attribute})
  graph = helper.make_graph(
      [single], 'fold', [helper.make_tensor_value_info(n, 0, None) for n in names if n],
      [helper.make_tensor_value_info(n, 0, None) for n in outs])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
  feeds = {n: v for n, v in zip(names, inputs) if n}
  return ReferenceEvaluator(model).run(None, feeds)


def _attrs(node) -> dict[str, Any]:
  from onnx import helper  # pylint: disable=g-import-not-at-top
  return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _node_desc(node) -> str:
  return f'ONNX node {node.name!r} ({node.op_type})'


class _OnnxReader:
  """Walks an IResNet ONNX graph and fills a torch-named state dict."""

  def __init__(self, model):
    self.model = model
    self.g = _OnnxGraph(model)
    self._stage_widths = []
    self.sd: dict[str, np.ndarray] = {}
    self.bns: dict[str, tuple] = {}  # prefix -> (gamma, beta, mean, var, eps)
    self.eps_seen = []
    self.input_scale = None  # per-channel factor folded into the stem (MXNet preprocessing)
    self.raw_input = False

  # -- layers -------------------------------------------------------------------------

  def conv(self, node, key: str, kernel: int, stride: int):
    """Reads a Conv -> (output tensor, bias or None) and stores its weight under key."""
    if node.op_type != 'Conv':
      raise ConversionError(f'{_node_desc(node)}: expected Conv for {key!r}')
    self.g.visited.add(id(node))
    a = _attrs(node)
    w = self.g.const(node.input[1], node)
    pad = (kernel - 1) // 2
    if (w.ndim != 4 or w.shape[2:] != (kernel, kernel)
        or list(a.get('strides', [1, 1])) != [stride, stride]
        or list(a.get('pads', [0, 0, 0, 0])) != [pad] * 4 or a.get('group', 1) != 1
        or list(a.get('dilations', [1, 1])) != [1, 1] or a.get('auto_pad', b'NOTSET') not in (
            b'NOTSET', 'NOTSET')):
      raise ConversionError(
          f'{_node_desc(node)} for {key!r}: expected {kernel}x{kernel} stride {stride} pad '
          f'{pad}, got weight {w.shape} strides {a.get("strides")} pads {a.get("pads")}')
    self.sd[key] = w.astype(np.float32)
    bias = self.g.const(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
    return node.output[0], bias

  def maybe_bn(self, tensor: str, prefix: str, channels: int, bias=None, node=None) -> str:
    """Optional BatchNormalization after `tensor` (or `node`); a conv bias is absorbed."""
    if node is None:
      nxt = self.g.next_nodes(tensor)
      node = nxt[0] if len(nxt) == 1 and nxt[0].op_type == 'BatchNormalization' else None
    gamma = np.ones(channels)
    beta, mean, var, eps = np.zeros(channels), np.zeros(channels), None, None
    if node is not None:
      self.g.visited.add(id(node))
      a = _attrs(node)
      if a.get('training_mode', 0):
        raise ConversionError(f'{_node_desc(node)}: training_mode BatchNormalization')
      gamma, beta, mean, var = (self.g.const(n, node).astype(np.float64).reshape(-1)
                                for n in node.input[1:5])
      if gamma.shape != (channels,):
        raise ConversionError(f'{_node_desc(node)} for {prefix!r}: {gamma.shape[0]} channels, '
                              f'expected {channels}')
      eps = float(a.get('epsilon', 1e-5))
      self.eps_seen.append(eps)
      tensor = node.output[0]
    if bias is not None:
      mean = mean - bias.astype(np.float64).reshape(-1)
    self.bns[prefix] = (gamma, beta, mean, var, eps)  # var/eps None: no BN (set at the end)
    return tensor

  def prelu(self, tensor: str, key: str, channels: int) -> str:
    node = self.g.only_next(tensor, f'PRelu {key}')
    if node.op_type != 'PRelu':
      raise ConversionError(f'{_node_desc(node)}: expected PRelu for {key!r}')
    self.g.visited.add(id(node))
    slope = self.g.const(node.input[1], node).astype(np.float32).reshape(-1)
    if slope.size == 1:
      slope = np.full((channels,), slope[0], np.float32)
    if slope.shape != (channels,):
      raise ConversionError(f'{_node_desc(node)} for {key!r}: slope {slope.shape}, expected '
                            f'({channels},)')
    self.sd[key] = slope
    return node.output[0]

  # -- graph structure ----------------------------------------------------------------

  def preprocessing(self, tensor: str) -> str:
    """Folds leading elementwise input scaling ((x - a) * m) into a per-channel factor."""
    scale, shift = np.ones(3), np.zeros(3)  # preprocessed = scale * raw + shift
    while True:
      nxt = self.g.next_nodes(tensor)
      if len(nxt) != 1 or nxt[0].op_type not in ('Sub', 'Mul', 'Div', 'Add'):
        break
      node = nxt[0]
      if node.input[0] != tensor and node.op_type in ('Sub', 'Div'):
        raise ConversionError(f'{_node_desc(node)}: unsupported input preprocessing')
      c = self.g.const(node.input[1] if node.input[0] == tensor else node.input[0], node)
      c = np.asarray(c, np.float64)
      if c.size not in (1, 3):
        raise ConversionError(f'{_node_desc(node)}: unsupported input preprocessing constant '
                              f'of shape {c.shape}')
      c = np.broadcast_to(c.reshape(-1), (3,))
      if node.op_type == 'Sub':
        shift = shift - c
      elif node.op_type == 'Add':
        shift = shift + c
      elif node.op_type == 'Mul':
        scale, shift = scale * c, shift * c
      else:
        scale, shift = scale / c, shift / c
      self.g.visited.add(id(node))
      tensor = node.output[0]
    if np.any(scale != 1) or np.any(shift != 0):
      # raw pixel x = 127.5 u + 127.5 (u = fsjax input): scale*x + shift = 127.5 scale u
      # exactly when shift = -127.5 scale (the preprocessing is centred at 127.5).
      if not np.allclose(shift, -127.5 * scale, rtol=1e-6, atol=1e-9):
        raise ConversionError(
            f'unsupported ONNX input preprocessing (x * {scale.tolist()} + {shift.tolist()}): '
            'only scaling centred at 127.5 can be folded into the (x-127.5)/127.5 input')
      self.input_scale = 127.5 * scale
      self.raw_input = True
    return tensor

  def read(self):
    """Returns (state dict, layers, width, embedding_dim, eps)."""
    if len(self.g.inputs) != 1:
      raise ConversionError(f'expected one ONNX graph input, found '
                            f'{[i.name for i in self.g.inputs]}')
    inp = self.g.inputs[0]
    dims = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or any(d not in (None, w) for d, w in zip(dims[1:], (3, 112, 112))):
      raise ConversionError(f'ONNX input {inp.name!r} has shape {dims}; expected '
                            '[B, 3, 112, 112] (NCHW)')
    t = self.preprocessing(inp.name)

    # Stem.
    stem = self.g.only_next(t, 'stem Conv')
    t, b = self.conv(stem, 'conv1.weight', 3, 1)
    width = self.sd['conv1.weight'].shape[0]
    if self.input_scale is not None:
      self.sd['conv1.weight'] = (self.sd['conv1.weight'] *
                                 self.input_scale[None, :, None, None]).astype(np.float32)
    t = self.maybe_bn(t, 'bn1', width, b)
    t = self.prelu(t, 'prelu.weight', width)

    # Residual blocks.
    layers, cin = [], width
    while True:
      nxt = self.g.next_nodes(t)
      main = [n for n in nxt if n.op_type == 'BatchNormalization' or (
          n.op_type == 'Conv' and self.g.const(n.input[1], n).shape[2:] == (3, 3))]
      if not any(n.op_type in ('Add', 'Sum') for n in nxt) and not any(
          n.op_type == 'Conv' and n not in main for n in nxt):
        break  # no shortcut branch: the head
      if len(main) != 1:
        raise ConversionError(f'ONNX tensor {t!r}: cannot find the residual main path among '
                              f'{[n.op_type for n in nxt]}')
      t, cin = self.block(t, main[0], layers, cin)
    if len(layers) != 4:
      raise ConversionError(f'expected 4 IResNet stages, found {len(layers)}')
    for s, cout in enumerate(self._stage_widths):
      if cout != width * 2**s:
        raise ConversionError(f'stage {s + 1} has {cout} channels, expected {width * 2**s}')

    # Head.
    t = self.maybe_bn(t, 'bn2', cin)
    node = self.g.only_next(t, 'Flatten')
    if node.op_type not in ('Flatten', 'Reshape'):
      raise ConversionError(f'{_node_desc(node)}: expected Flatten/Reshape before the fc')
    if node.op_type == 'Flatten' and _attrs(node).get('axis', 1) != 1:
      raise ConversionError(f'{_node_desc(node)}: Flatten axis must be 1')
    self.g.visited.add(id(node))
    t, bias = self.fc(node.output[0], cin * 7 * 7)
    dim = self.sd['fc.weight'].shape[0]
    self.sd['fc.bias'] = (np.zeros((dim,)) if bias is None else bias).astype(np.float32)
    t = self.maybe_bn(t, 'features', dim)
    if not self.g.is_output(t):
      extra = [f'{n.name}({n.op_type})' for n in self.g.next_nodes(t)]
      raise ConversionError(f'unexpected ONNX nodes after the embedding: {extra}')

    for node in self.model.graph.node:
      if node.op_type in ('Conv', 'BatchNormalization', 'PRelu', 'Gemm', 'MatMul') and (
          id(node) not in self.g.visited):
        raise ConversionError(f'{_node_desc(node)} was not mapped to any IResNet layer')
    eps = collections.Counter(self.eps_seen).most_common(1)[0][0] if self.eps_seen else 1e-5
    self._finish_bns(eps)
    return self.sd, tuple(layers), int(width), int(dim), float(eps)

  def block(self, t: str, first, layers: list, cin: int):
    """One IBasicBlock starting at tensor t; returns (output tensor, output channels)."""
    # Main path: [BN] Conv3x3 [BN] PRelu Conv3x3 [BN] -> Add.
    if first.op_type == 'BatchNormalization':
      pre = self.maybe_bn(t, '_pending.bn1', cin, node=first)
      conv1 = self.g.only_next(pre, 'block conv1')
    else:
      self.bns['_pending.bn1'] = (np.ones(cin), np.zeros(cin), np.zeros(cin), None, None)
      conv1 = first
    w = self.g.const(conv1.input[1], conv1)
    cout = w.shape[0]
    y, b = self.conv(conv1, '_pending.conv1.weight', 3, 1)
    y = self.maybe_bn(y, '_pending.bn2', cout, b)
    y = self.prelu(y, '_pending.prelu.weight', cout)
    conv2 = self.g.only_next(y, 'block conv2')
    stride = _attrs(conv2).get('strides', [1, 1])[0] if conv2.op_type == 'Conv' else 1
    y, b = self.conv(conv2, '_pending.conv2.weight', 3, stride)
    y = self.maybe_bn(y, '_pending.bn3', cout, b)
    add = self.g.only_next(y, 'residual Add')
    if add.op_type not in ('Add', 'Sum') or len(add.input) != 2:
      raise ConversionError(f'{_node_desc(add)}: expected the residual Add')
    self.g.visited.add(id(add))
    other = add.input[1] if self.g.source(add.input[0]) == self.g.source(y) else add.input[0]
    downsample = self.g.source(other) != self.g.source(t)
    if downsample != (stride == 2):
      raise ConversionError(f'{_node_desc(conv2)}: block with stride {stride} and '
                            f'{"a conv" if downsample else "an identity"} shortcut is not an '
                            'arcface IResNet block')
    if downsample:
      layers.append(0)
      self._stage_widths.append(cout)
      src = self.g.producer.get(self.g.source(other))
      if src is not None and src.op_type == 'BatchNormalization':
        bn_node, conv_node = src, self.g.producer.get(self.g.source(src.input[0]))
      else:
        bn_node, conv_node = None, src
      if conv_node is None or conv_node.op_type != 'Conv' or (
          self.g.source(conv_node.input[0]) != self.g.source(t)):
        raise ConversionError(f'{_node_desc(add)}: shortcut is not Conv1x1 [BN] of the block '
                              'input')
      ds, b = self.conv(conv_node, '_pending.downsample.0.weight', 1, 2)
      if bn_node is not None and self.g.source(bn_node.input[0]) != self.g.source(ds):
        raise ConversionError(f'{_node_desc(bn_node)}: unexpected shortcut structure')
      self.maybe_bn(ds, '_pending.downsample.1', cout, b)
    elif not layers:
      raise ConversionError(f'{_node_desc(add)}: the first block has no downsample shortcut')
    prefix = f'layer{len(layers)}.{layers[-1]}'
    layers[-1] += 1
    for key in [k for k in self.sd if k.startswith('_pending.')]:
      self.sd[prefix + key[len('_pending'):]] = self.sd.pop(key)
    for key in [k for k in self.bns if k.startswith('_pending.')]:
      self.bns[prefix + key[len('_pending'):]] = self.bns.pop(key)
    return add.output[0], cout

  def fc(self, tensor: str, in_features: int):
    """Gemm, or MatMul + Add: stores fc.weight (D, in) and returns (output, bias)."""
    node = self.g.only_next(tensor, 'Gemm')
    self.g.visited.add(id(node))
    if node.op_type == 'Gemm':
      a = _attrs(node)
      if a.get('transA', 0):
        raise ConversionError(f'{_node_desc(node)}: transA is not supported')
      w = self.g.const(node.input[1], node).astype(np.float64)
      w = w if a.get('transB', 0) else w.T
      w = w * a.get('alpha', 1.0)
      bias = None
      if len(node.input) > 2 and node.input[2]:
        bias = self.g.const(node.input[2], node).astype(np.float64) * a.get('beta', 1.0)
        bias = np.broadcast_to(bias.reshape(-1), (w.shape[0],))
      out = node.output[0]
    elif node.op_type == 'MatMul':
      w = self.g.const(node.input[1], node).astype(np.float64).T
      out, bias = node.output[0], None
      nxt = self.g.next_nodes(out)
      if len(nxt) == 1 and nxt[0].op_type == 'Add':
        add = nxt[0]
        self.g.visited.add(id(add))
        c = add.input[1] if self.g.source(add.input[0]) == self.g.source(out) else add.input[0]
        bias = np.broadcast_to(self.g.const(c, add).astype(np.float64).reshape(-1),
                               (w.shape[0],))
        out = add.output[0]
    else:
      raise ConversionError(f'{_node_desc(node)}: expected Gemm or MatMul for the fc')
    if w.shape[1] != in_features:
      raise ConversionError(f'{_node_desc(node)}: fc input {w.shape[1]}, expected '
                            f'{in_features} (= C x 7 x 7)')
    self.sd['fc.weight'] = w.astype(np.float32)
    return out, bias

  def _finish_bns(self, eps: float):
    for prefix, (gamma, beta, mean, var, node_eps) in self.bns.items():
      if var is None:  # folded / absent BN: identity with the absorbed bias in the mean
        var, node_eps = np.full_like(mean, 1.0 - eps), eps
      self.sd[prefix + '.weight'] = gamma.astype(np.float32)
      self.sd[prefix + '.bias'] = beta.astype(np.float32)
      self.sd[prefix + '.running_mean'] = mean.astype(np.float32)
      self.sd[prefix + '.running_var'] = (var + node_eps - eps).astype(np.float32)


def load_onnx(path: str) -> tuple[dict[str, np.ndarray], tuple[int, ...], int, int, float, bool]:
  """Reads an IResNet ONNX recognizer by graph structure.

  Returns:
    (torch-named state dict, layers, width, embedding_dim, bn_eps, raw_input) where
    raw_input says the ONNX model takes 0-255 pixels (its preprocessing was folded).
  """
  try:
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError("the onnx package is needed for .onnx files: pip install onnx") from e
  try:
    model = onnx.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(f'cannot read {path} as ONNX: {type(e).__name__}') from e
  reader = _OnnxReader(model)
  sd, layers, width, dim, eps = reader.read()
  return sd, layers, width, dim, eps, reader.raw_input


def onnx_forward(path: str, x: np.ndarray, raw_input: bool) -> np.ndarray:
  """Runs the ONNX file with onnx.reference (onnxruntime when installed) on [B,112,112,3]."""
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(path)
  inp = [i for i in model.graph.input
         if i.name not in {t.name for t in model.graph.initializer}][0]
  batch_dim = inp.type.tensor_type.shape.dim[0].dim_value
  nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)
  if raw_input:
    nchw = nchw * 127.5 + 127.5
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top
    runner = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
  except ImportError:
    from onnx.reference import ReferenceEvaluator  # pylint: disable=g-import-not-at-top
    runner = ReferenceEvaluator(model)

  def run(batch):
    return runner.run(None, {inp.name: batch})[0]

  if batch_dim == 1:
    return np.concatenate([run(nchw[i:i + 1]) for i in range(len(nchw))])
  return np.asarray(run(nchw))


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
    overwrite: replace an existing OUT_DIR.
    num_verify: number of random verification inputs.
    seed: seed of the verification inputs.
    log: progress printer.

  Returns:
    identity.json dict (with 'verification': {'worst_cosine', 'num_inputs'} when verified).

  Raises:
    ConversionError: unreadable input, missing/unexpected/mis-shaped key, failed verification.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from fsjax import identity as identity_lib  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(src):
    raise ConversionError(f'{src}: no such file')
  if os.path.exists(out_dir) and not overwrite:
    raise ConversionError(f'{out_dir} exists (use --overwrite to replace it)')
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
    sd, layers, width, dim, eps, raw_input = load_onnx(src)
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
    x = np.random.RandomState(seed).uniform(-1, 1, (num_verify, 112, 112, 3)).astype(np.float32)
    if fmt == 'pth':
      want = torch_forward(original, layers, eps, x)
      ref = 'torch'
    else:
      want = onnx_forward(src, x, raw_input)
      ref = 'onnx'
    got = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))
    cos = worst_cosine(got, want)
    log(f'verification: worst cosine flax vs {ref} over {num_verify} random inputs = {cos:.8f} '
        f'(1 - cos = {1 - cos:.1e})')
    if not cos > MIN_COSINE:
      raise ConversionError(f'verification failed: worst cosine {cos:.6f} <= {MIN_COSINE}')
    meta['verification'] = {'reference': ref, 'worst_cosine': cos, 'num_inputs': num_verify}
  path = identity_lib.save_identity(out_dir, variables, meta, overwrite=overwrite)
  log(f'wrote {path}')
  return meta
