"""Converts GHOST (ai-forever/sber-swap) AEI-Net and discriminator weights to fsjax Flax variables.

GHOST's release `sber-swap-v2.0` ships state dicts `G_unet_{1block,2blocks,3blocks}.pth`
(AEI_Net, 'unet' backbone, 512-d z_id) and `D_unet_*.pth` (pix2pixHD MultiscaleDiscriminator,
n_layers 5, InstanceNorm, 3 scales); layout and key names in shared/design/ghost.md, a PyTorch
twin in fsjax/bench/torch_reference/ghost.py (whose `verify` runs it beside the converted model:
the reference sits in bench, above this layer). The mapping is pure numpy (torch is imported
only to read .pth files) and strict: every missing, unexpected, mis-shaped or non-finite key is
a ConversionError naming the key. `fsjax convert-generator` (fsjax/swap/ghost.py) turns the
result into a swapper export.

Generator, GHOST key -> fsjax AEINet variable (configs: `GeneratorLayout.model_fields()`):

  encoder.conv{k}.0.weight (O, I, 4, 4)       encoder/down{k-1}_conv/kernel (4, 4, I, O)
  encoder.conv{k}.1.{weight, bias}            encoder/down{k-1}_bn/{scale, bias}
  encoder.conv{k}.1.running_{mean, var}       batch_stats encoder/down{k-1}_bn/{mean, var}
  encoder.deconv{j}.deconv.weight (I, O, 4, 4)   encoder/up{j-1}_conv/kernel (4, 4, O, I)
  encoder.deconv{j}.bn.*                      encoder/up{j-1}_bn (as above)
  generator.up1.{weight (512, C, 2, 2), bias}    generator/id_proj/{kernel (2, 2, C, 512), bias}
  generator.AADBlk{b}.add_blocks.{3i}.*       generator/block{b-1}/aad{i+1}
  generator.AADBlk{b}.add_blocks.{3i+2}.weight   generator/block{b-1}/conv{i+1}/kernel
  generator.AADBlk{b}.last_add_block.{0, 2}   generator/block{b-1}/{aad_skip, conv_skip}
  AAD layer: conv1 -> att_gamma, conv2 -> att_beta, fc1 -> id_gamma, fc2 -> id_beta
             (Linear (O, I) -> kernel (I, O)), conv_h -> mask.

Discriminator: torch `layer{num_D - 1 - k}` -> fsjax `scale{k}` (pix2pixHD scores the full
resolution with its last layer), Sequential conv indices 0, 2, 5, ..., 2 + 3 n_layers ->
conv0 .. conv{n_layers + 1} (norm n at index 3n, BatchNorm only -> norm{n}).

GHOST feeds the generator the raw 512-d ArcFace embedding (no L2 normalisation): run the
converted weights with an unnormalised z_id (model_fields() sets config.model.id_normalize
False).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import numpy as np

from fsjax.identity import convert as identity_convert
from fsjax.identity.errors import ConversionError  # one error type for every converter

# Verification results above this (max |y_flax - y_torch| in [-1, 1]) mean a broken conversion.
MAX_VERIFY_DIFF = 1e-3


@dataclasses.dataclass(frozen=True)
class GeneratorLayout:
  """What a GHOST generator state dict holds.

  Attributes:
    num_blocks: [AAD -> ReLU -> Conv3x3] units per AAD ResBlk (GHOST ships 1, 2, 3).
    attr_channels: encoder down-path widths (GHOST: 32 ... 1024, 1024).
    gen_channels: input width of each AAD ResBlk (GHOST: 1024, ..., 64).
    id_dim: z_id size (GHOST: 512).
    backbone: attribute encoder variant ('unet'; the only one converted).
  """
  num_blocks: int
  attr_channels: tuple[int, ...]
  gen_channels: tuple[int, ...]
  id_dim: int
  backbone: str = 'unet'

  @property
  def image_size(self) -> int:
    """The input side the encoder maps to the 2 x 2 first level."""
    return 2 ** (len(self.attr_channels) + 1)

  def model_fields(self) -> dict[str, Any]:
    """config.model fields that build the matching fsjax AEINet and feed it as GHOST does
    (raw z_id); the rest (dtype, remat, aad_merge_attr_convs): any value."""
    return {
        'attr_channels': tuple(self.attr_channels),
        'gen_channels': tuple(self.gen_channels),
        'id_dim': self.id_dim,
        'aad_num_blocks': self.num_blocks,
        'aad_norm': 'instance',
        'aad_att_kernel': 1,
        'aad_mask_channels': 'one',
        'conv_bias': False,
        'id_normalize': False,
        'attr_full_res_channels': 0,  # GHOST's encoder has no full-resolution level
    }


@dataclasses.dataclass(frozen=True)
class DiscriminatorLayout:
  """What a pix2pixHD MultiscaleDiscriminator state dict holds (GHOST: 3, 5, 64, 512)."""
  num_d: int
  n_layers: int
  ndf: int
  max_channels: int
  norm: str = 'instance'  # 'instance' (no affine, no state) | 'batch'

  def discriminator_fields(self) -> dict[str, Any]:
    """config.discriminator fields that build the matching fsjax MultiscaleDiscriminator."""
    return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------
# Helpers.


def _to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{key: numpy array} from numpy arrays or torch tensors (floats as float32)."""
  if not isinstance(state_dict, Mapping):
    raise ConversionError(f'expected a state dict (a mapping of names to tensors), got '
                          f'{type(state_dict).__name__}')
  out = {}
  for key, value in state_dict.items():
    if not isinstance(key, str):
      raise ConversionError(f'state dict key {key!r} is not a string')
    if hasattr(value, 'detach'):  # torch.Tensor
      value = value.detach().cpu()
      value = value.float().numpy() if value.is_floating_point() else value.numpy()
    try:
      value = np.asarray(value)
    except Exception as e:  # pylint: disable=broad-except
      raise ConversionError(f'key {key!r} is not an array ({type(value).__name__})') from e
    if value.dtype == object:
      raise ConversionError(f'key {key!r} is not a numeric array')
    out[key] = value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value
  return out


_D_KEY = re.compile(r'^(layer\d+|scale\d+_layer\d+)\.')
_G_KEY = re.compile(r'^(encoder|generator)\.')


def state_dict_kind(state_dict: Mapping[str, Any]) -> str:
  """'generator' | 'discriminator' | 'unknown', from the key names."""
  keys = list(state_dict)
  if keys and all(_D_KEY.match(k) for k in keys):
    return 'discriminator'
  if keys and all(_G_KEY.match(k) for k in keys):
    return 'generator'
  return 'unknown'


def _first(keys) -> str:
  return ', '.join(sorted(keys)[:2])


def _need(sd: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
  if key not in sd:
    raise ConversionError(f'missing key {key!r}{what}')
  return sd[key]


# Entries of the mapping tables: (torch key, torch shape, collection, flax path, kind);
# kind: 'conv' (O, I, kh, kw) | 'convt' (I, O, kh, kw) | 'linear' (O, I) | 'vector'.
_Entry = tuple[str, tuple[int, ...], str, tuple[str, ...], str]


def _bn_entries(prefix: str, c: int, path: tuple[str, ...]) -> Iterator[_Entry]:
  yield f'{prefix}.weight', (c,), 'params', path + ('scale',), 'vector'
  yield f'{prefix}.bias', (c,), 'params', path + ('bias',), 'vector'
  yield f'{prefix}.running_mean', (c,), 'batch_stats', path + ('mean',), 'vector'
  yield f'{prefix}.running_var', (c,), 'batch_stats', path + ('var',), 'vector'


def _transform(value: np.ndarray, kind: str) -> np.ndarray:
  if kind in ('conv', 'convt'):  # (O, I, kh, kw) -> (kh, kw, I, O); (I, O, ..) -> (kh, kw, O, I)
    value = np.transpose(value, (2, 3, 1, 0))
  elif kind == 'linear':
    value = value.T
  return np.ascontiguousarray(value, np.float32)


def _check_and_fill(sd: dict[str, np.ndarray], entries: list[_Entry],
                    bn_prefixes: set[str]) -> dict[str, Any]:
  """Strict check of sd against the table, then the Flax variables it describes."""
  want = {e[0]: e for e in entries}
  for key, shape, *_ in entries:
    if key not in sd:
      raise ConversionError(f'missing key {key!r}')
    if tuple(sd[key].shape) != shape:
      raise ConversionError(f'shape mismatch for key {key!r}: got {tuple(sd[key].shape)}, '
                            f'expected {shape}')
    if not np.all(np.isfinite(sd[key])):
      raise ConversionError(f'key {key!r} has non-finite values')
  for key in sd:
    if key in want:
      continue
    if key.endswith('.num_batches_tracked') and key[:-len('.num_batches_tracked')] in bn_prefixes:
      continue
    raise ConversionError(f'unexpected key {key!r}')
  out: dict[str, Any] = {'params': {}, 'batch_stats': {}}
  for key, _, collection, path, kind in entries:
    node = out[collection]
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = _transform(sd[key], kind)
  return out


# ------------------------------------------------------------------------------------------
# Generator.


def detect_layout(state_dict: Mapping[str, Any]) -> GeneratorLayout:
  """The GeneratorLayout of a GHOST AEI_Net state dict, from its keys and shapes.

  Raises:
    ConversionError: a discriminator state dict, a 'linknet' encoder, or keys that are not
      GHOST's AEI-Net (the message names the key).
  """
  sd = _to_numpy(state_dict)
  kind = state_dict_kind(sd)
  if kind == 'discriminator':
    raise ConversionError(
        f'this is a discriminator state dict (keys {_first(sd)}: pix2pixHD '
        'MultiscaleDiscriminator, GHOST D_unet_*.pth), not a generator: pass G_unet_*.pth, '
        'or convert it with discriminator_to_flax')
  stray = sorted(k for k in sd if not _G_KEY.match(k))
  if stray:
    raise ConversionError(f'unexpected key {stray[0]!r}: not a GHOST AEI_Net state dict '
                          "(its keys start with 'encoder.' or 'generator.')")
  what = ': not a GHOST AEI_Net state dict'
  _need(sd, 'encoder.conv1.0.weight', what)
  levels = sorted(int(m.group(1)) for k in sd
                  if (m := re.match(r'^encoder\.conv(\d+)\.0\.weight$', k)))
  for k in range(1, max(levels) + 1):
    _need(sd, f'encoder.conv{k}.0.weight', '')
  n = max(levels)
  attr = tuple(int(sd[f'encoder.conv{k}.0.weight'].shape[0]) for k in range(1, n + 1))
  if n >= 3 and 'encoder.deconv2.deconv.weight' in sd and 'encoder.deconv1.deconv.weight' in sd:
    c_in = int(sd['encoder.deconv2.deconv.weight'].shape[0])
    c_up = int(sd['encoder.deconv1.deconv.weight'].shape[1])
    if c_in == c_up:
      raise ConversionError(
          f"key 'encoder.deconv2.deconv.weight' takes {c_in} channels = deconv1's output: "
          "the 'linknet' encoder (skips added, not concatenated) is not supported, only 'unet'")
  up1 = _need(sd, 'generator.up1.weight', what)
  if up1.ndim != 4:
    raise ConversionError(f"shape mismatch for key 'generator.up1.weight': got {up1.shape}, "
                          'expected 4 dimensions')
  gen = []
  for b in range(1, n + 2):
    fc = _need(sd, f'generator.AADBlk{b}.add_blocks.0.fc1.weight', '')
    if fc.ndim != 2:
      raise ConversionError(f"shape mismatch for key 'generator.AADBlk{b}.add_blocks.0.fc1."
                            f"weight': got {fc.shape}, expected 2 dimensions")
    gen.append(int(fc.shape[0]))
  idx = [int(m.group(1)) for k in sd
         if (m := re.match(r'^generator\.AADBlk1\.add_blocks\.(\d+)\.', k))]
  last = max(idx)
  if last % 3 != 2:
    raise ConversionError(f"key 'generator.AADBlk1.add_blocks.{last}.*' ends the units: "
                          'expected index 3 * num_blocks - 1 (a conv)')
  return GeneratorLayout(num_blocks=last // 3 + 1, attr_channels=attr, gen_channels=tuple(gen),
                         id_dim=int(up1.shape[0]))


def _attribute_channels(attr: tuple[int, ...]) -> list[int]:
  out = [attr[-1]] + [2 * c for c in reversed(attr[:-1])]
  return out + [out[-1]]


def _aad_entries(prefix: str, c: int, c_att: int, c_id: int,
                 path: tuple[str, ...]) -> Iterator[_Entry]:
  for t, f in (('conv1', 'att_gamma'), ('conv2', 'att_beta')):
    yield f'{prefix}.{t}.weight', (c, c_att, 1, 1), 'params', path + (f, 'kernel'), 'conv'
    yield f'{prefix}.{t}.bias', (c,), 'params', path + (f, 'bias'), 'vector'
  for t, f in (('fc1', 'id_gamma'), ('fc2', 'id_beta')):
    yield f'{prefix}.{t}.weight', (c, c_id), 'params', path + (f, 'kernel'), 'linear'
    yield f'{prefix}.{t}.bias', (c,), 'params', path + (f, 'bias'), 'vector'
  yield f'{prefix}.conv_h.weight', (1, c, 1, 1), 'params', path + ('mask', 'kernel'), 'conv'
  yield f'{prefix}.conv_h.bias', (1,), 'params', path + ('mask', 'bias'), 'vector'


def _generator_table(layout: GeneratorLayout) -> tuple[list[_Entry], set[str]]:
  attr, gen = tuple(layout.attr_channels), tuple(layout.gen_channels)
  if len(gen) != len(attr) + 1:
    raise ConversionError(f'layout has {len(gen)} AAD blocks for {len(attr)} encoder levels '
                          f'(expected {len(attr) + 1})')
  entries: list[_Entry] = []
  bns: set[str] = set()
  enc = ('encoder',)
  cin = 3
  for k, c in enumerate(attr, start=1):
    entries.append((f'encoder.conv{k}.0.weight', (c, cin, 4, 4), 'params',
                    enc + (f'down{k - 1}_conv', 'kernel'), 'conv'))
    bns.add(f'encoder.conv{k}.1')
    entries += _bn_entries(f'encoder.conv{k}.1', c, enc + (f'down{k - 1}_bn',))
    cin = c
  for j, c in enumerate(reversed(attr[:-1]), start=1):
    entries.append((f'encoder.deconv{j}.deconv.weight', (cin, c, 4, 4), 'params',
                    enc + (f'up{j - 1}_conv', 'kernel'), 'convt'))
    bns.add(f'encoder.deconv{j}.bn')
    entries += _bn_entries(f'encoder.deconv{j}.bn', c, enc + (f'up{j - 1}_bn',))
    cin = 2 * c
  g, c_id = ('generator',), layout.id_dim
  entries.append(('generator.up1.weight', (c_id, gen[0], 2, 2), 'params',
                  g + ('id_proj', 'kernel'), 'convt'))
  entries.append(('generator.up1.bias', (gen[0],), 'params', g + ('id_proj', 'bias'), 'vector'))
  outs = gen[1:] + (3,)
  for b, (ci, co, ca) in enumerate(zip(gen, outs, _attribute_channels(attr)), start=1):
    t, f = f'generator.AADBlk{b}', g + (f'block{b - 1}',)
    for i in range(layout.num_blocks):
      entries += _aad_entries(f'{t}.add_blocks.{3 * i}', ci, ca, c_id, f + (f'aad{i + 1}',))
      cout = co if i == layout.num_blocks - 1 else ci
      entries.append((f'{t}.add_blocks.{3 * i + 2}.weight', (cout, ci, 3, 3), 'params',
                      f + (f'conv{i + 1}', 'kernel'), 'conv'))
    if ci != co:
      entries += _aad_entries(f'{t}.last_add_block.0', ci, ca, c_id, f + ('aad_skip',))
      entries.append((f'{t}.last_add_block.2.weight', (co, ci, 3, 3), 'params',
                      f + ('conv_skip', 'kernel'), 'conv'))
  return entries, bns


def expected_generator_shapes(layout: GeneratorLayout) -> dict[str, tuple[int, ...]]:
  """GHOST state_dict key -> shape for `layout` (num_batches_tracked keys excluded)."""
  return {e[0]: e[1] for e in _generator_table(layout)[0]}


def generator_to_flax(state_dict: Mapping[str, Any],
                      layout: GeneratorLayout | None = None) -> dict[str, Any]:
  """GHOST AEI_Net state dict -> {'params', 'batch_stats'} of fsjax's AEINet (float32 numpy).

  Args:
    state_dict: key -> numpy array or torch tensor (see load_state_dict_file).
    layout: default detect_layout(state_dict); build the model with layout.model_fields().

  Raises:
    ConversionError: naming the first missing, unexpected, mis-shaped or non-finite key.
  """
  sd = _to_numpy(state_dict)
  layout = layout or detect_layout(sd)
  entries, bns = _generator_table(layout)
  return _check_and_fill(sd, entries, bns)


def build_generator(layout: GeneratorLayout, dtype: str = 'float32') -> Any:
  """The fsjax AEINet module that generator_to_flax's variables belong to."""
  from fsjax.models import aei_net  # pylint: disable=g-import-not-at-top
  f = layout.model_fields()
  return aei_net.AEINet(
      attr_channels=f['attr_channels'], gen_channels=f['gen_channels'], id_dim=f['id_dim'],
      aad_norm=f['aad_norm'], aad_att_kernel=f['aad_att_kernel'],
      aad_mask_channels=f['aad_mask_channels'], conv_bias=f['conv_bias'], dtype=dtype,
      aad_num_blocks=f['aad_num_blocks'])


# ------------------------------------------------------------------------------------------
# Discriminator.


def detect_discriminator_layout(state_dict: Mapping[str, Any]) -> DiscriminatorLayout:
  """The DiscriminatorLayout of a pix2pixHD MultiscaleDiscriminator state dict."""
  sd = _to_numpy(state_dict)
  kind = state_dict_kind(sd)
  if kind == 'generator':
    raise ConversionError(f'this is a generator state dict (keys {_first(sd)}: GHOST '
                          'AEI_Net, G_unet_*.pth), not a discriminator')
  if any(k.startswith('scale') for k in sd):
    key = sorted(k for k in sd if k.startswith('scale'))[0]
    raise ConversionError(f'unexpected key {key!r}: getIntermFeat discriminators are not '
                          'supported')
  stray = sorted(k for k in sd if not _D_KEY.match(k))
  if stray:
    raise ConversionError(f'unexpected key {stray[0]!r}: not a pix2pixHD '
                          "MultiscaleDiscriminator state dict (keys 'layer{i}.{j}.*')")
  w0 = _need(sd, 'layer0.0.weight', ': not a pix2pixHD MultiscaleDiscriminator state dict')
  num_d = max(int(re.match(r'^layer(\d+)\.', k).group(1)) for k in sd) + 1
  convs = sorted({int(m.group(1)) for k in sd
                  if (m := re.match(r'^layer0\.(\d+)\.weight$', k)) and sd[k].ndim == 4})
  last = convs[-1]
  if last < 5 or (last - 2) % 3:
    raise ConversionError(f"key 'layer0.{last}.weight' is the last conv: expected index "
                          '2 + 3 * n_layers (n_layers >= 1)')
  n_layers = (last - 2) // 3
  widths = [int(sd[f'layer0.{j}.weight'].shape[0]) for j in convs if f'layer0.{j}.weight' in sd]
  norm = 'batch' if 'layer0.3.running_mean' in sd else 'instance'
  return DiscriminatorLayout(num_d=num_d, n_layers=n_layers, ndf=int(w0.shape[0]),
                             max_channels=max(widths[:-1]), norm=norm)


def _discriminator_table(layout: DiscriminatorLayout) -> tuple[list[_Entry], set[str]]:
  if layout.norm not in ('instance', 'batch'):
    raise ConversionError(f'unsupported discriminator norm {layout.norm!r}')
  entries: list[_Entry] = []
  bns: set[str] = set()
  for k in range(layout.num_d):
    t, f = f'layer{layout.num_d - 1 - k}', (f'scale{k}',)
    widths, nf = [layout.ndf], layout.ndf
    for _ in range(layout.n_layers):
      nf = min(nf * 2, layout.max_channels)
      widths.append(nf)
    cin = 3
    for n, c in enumerate(widths + [1]):
      j = 0 if n == 0 else 2 + 3 * (n - 1)
      entries.append((f'{t}.{j}.weight', (c, cin, 4, 4), 'params', f + (f'conv{n}', 'kernel'),
                      'conv'))
      entries.append((f'{t}.{j}.bias', (c,), 'params', f + (f'conv{n}', 'bias'), 'vector'))
      if layout.norm == 'batch' and 1 <= n <= layout.n_layers:
        bns.add(f'{t}.{j + 1}')
        entries += _bn_entries(f'{t}.{j + 1}', c, f + (f'norm{n}',))
      cin = c
  return entries, bns


def expected_discriminator_shapes(layout: DiscriminatorLayout) -> dict[str, tuple[int, ...]]:
  """pix2pixHD state_dict key -> shape for `layout` (num_batches_tracked keys excluded)."""
  return {e[0]: e[1] for e in _discriminator_table(layout)[0]}


def discriminator_to_flax(state_dict: Mapping[str, Any],
                          layout: DiscriminatorLayout | None = None) -> dict[str, Any]:
  """MultiscaleDiscriminator state dict -> {'params', 'batch_stats'} of fsjax's
  MultiscaleDiscriminator (build it with layout.discriminator_fields()); batch_stats is
  empty for instance norm. Raises ConversionError naming the key, as generator_to_flax."""
  sd = _to_numpy(state_dict)
  layout = layout or detect_discriminator_layout(sd)
  entries, bns = _discriminator_table(layout)
  return _check_and_fill(sd, entries, bns)


def build_discriminator(layout: DiscriminatorLayout, dtype: str = 'float32') -> Any:
  """The fsjax MultiscaleDiscriminator that discriminator_to_flax's variables belong to."""
  from fsjax.models import discriminator  # pylint: disable=g-import-not-at-top
  return discriminator.MultiscaleDiscriminator(dtype=dtype, **layout.discriminator_fields())


# ------------------------------------------------------------------------------------------
# Files (torch needed to read them).


def load_state_dict_file(path: str) -> dict[str, np.ndarray]:
  """Reads a GHOST .pth (G_*.pth / D_*.pth: bare state dicts) -> {key: numpy array}.

  torch.load(weights_only=True): tensors and containers only, no pickled code is run (a
  file that needs it is refused). Also accepts a state dict nested under 'state_dict' and
  strips a DataParallel 'module.' prefix.
  """
  torch = identity_convert.import_torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConversionError(f'cannot read {path} as a weights-only torch file (nothing in it '
                          f'was executed): {type(e).__name__}: {first[:200]}') from e
  if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
    obj = obj['state_dict']
  if not isinstance(obj, dict):
    raise ConversionError(f'{path}: expected a state dict, got {type(obj).__name__}')
  if obj and all(isinstance(k, str) and k.startswith('module.') for k in obj):
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  for key, value in obj.items():
    if not hasattr(value, 'detach'):
      raise ConversionError(f'{path}: key {key!r} is not a tensor ({type(value).__name__})')
  return _to_numpy(obj)
