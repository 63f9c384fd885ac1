"""Reads InsightFace / torch-exported ONNX IResNet recognizers into the torch-named state dict
of fsjax/identity/convert.py.

ONNX graphs are read by structure, not by initializer names: starting at the graph input,
the stem (Conv [BN] PRelu), each residual block (the Add joining [BN] Conv [BN] PRelu Conv
[BN] and the identity or 1x1 Conv [BN] shortcut) and the head ([BN] Flatten|Reshape
Gemm|MatMul+Add [BN]) are followed through the consumer graph. Exporters fold a BN that
follows a Conv into the Conv's bias (torch.onnx in eval mode does); such layers get an
identity BN whose mean absorbs the bias. Per-node epsilons (MXNet models use 2e-5) are
absorbed into the running variances (var + eps_node - eps). Leading Sub/Mul/Div/Add input
scaling (MXNet's (x - 127.5) * 0.0078125) is folded into the stem conv when it is centred
at 127.5 (the fsjax input is (x - 127.5) / 127.5).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from fsjax.identity.errors import ConversionError

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


