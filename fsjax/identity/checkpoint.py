"""Identity-encoder checkpoints: write, read and wrap an ArcFace IResNet for inference.

A checkpoint directory (written by `fsjax convert-arcface` or `fsjax train-arcface`):

  DIR/identity.json   {"arch", "layers", "width", "embedding_dim", "bn_eps", "stem_stride",
                       "input_size": 112,
                       "color": "RGB", "normalisation": "(x-127.5)/127.5",
                       "alignment": "arcface" | "ffhq", "source": ...}
  DIR/variables/      Orbax (StandardCheckpointer) tree {'params', 'batch_stats'}

Usage (Colab, evaluation scripts):

  encode = fsjax.load_identity_encoder('/path/to/arcface_r50')
  emb = encode(faces)   # [B, 112, 112, 3] uint8 or [-1, 1] float -> [B, 512] unit-norm
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fsjax import models
from fsjax.data import paths
from fsjax.models import arcface

META_FILE = 'identity.json'
VARIABLES_DIR = 'variables'
FORMAT = 'fsjax.identity/1'
NORMALISATION = '(x-127.5)/127.5'
ALIGNMENTS = ('arcface', 'ffhq', 'ghost224')
IDENTITY_SUBDIR = 'identity'  # where a training run keeps its own encoder: WORKDIR/identity


def make_meta(layers, width: int, embedding_dim: int, bn_eps: float, *, stem_stride: int = 1,
              alignment: str = 'arcface', arch: str | None = None, **extra) -> dict[str, Any]:
  """The identity.json dict of an IResNet layout (extra keys, e.g. 'source', are kept).

  `stem_stride` is 1 for every arcface_torch / InsightFace model; files without the key
  (older ones) read as 1.
  """
  if alignment not in ALIGNMENTS:
    raise ValueError(f'alignment must be one of {ALIGNMENTS}, got {alignment!r}')
  layers = [int(n) for n in layers]
  meta = {
      'format': FORMAT,
      'arch': arch or arcface.arch_name(layers, width, embedding_dim, stem_stride),
      'layers': layers,
      'width': int(width),
      'embedding_dim': int(embedding_dim),
      'bn_eps': float(bn_eps),
      'stem_stride': int(stem_stride),
      'input_size': arcface.INPUT_SIZE,
      'color': 'RGB',
      'normalisation': NORMALISATION,
      'alignment': alignment,
  }
  meta.update(extra)
  return meta


def read_meta(directory: str) -> dict[str, Any]:
  """Reads DIR/identity.json (raises FileNotFoundError naming the path)."""
  path = os.path.join(directory, META_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} not found: not an identity checkpoint directory '
                            '(make one with `fsjax convert-arcface` or `fsjax train-arcface`)')
  with open(path) as f:
    meta = json.load(f)
  for key in ('layers', 'width', 'embedding_dim', 'bn_eps'):
    if key not in meta:
      raise ValueError(f'{path}: missing key {key!r}')
  return meta


def module_from_meta(meta: Mapping[str, Any], dtype: Any = 'float32',
                     axis_name: str | None = None):
  """IResNet with the layout of an identity.json dict (fsjax.models.build_identity)."""
  return models.build_identity(meta, dtype=dtype, axis_name=axis_name)


def abstract_variables(module) -> Any:
  """ShapeDtypeStruct tree {'params', 'batch_stats'} of an IResNet (no compute)."""
  x = jnp.zeros((1, arcface.INPUT_SIZE, arcface.INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), x)


def check_output(directory: str, *, overwrite: bool = False, inputs: Sequence[str] = ()) -> str:
  """The absolute DIR `save_identity` may write (paths.check_output_dir: it must not overlap
  `inputs`, and only an earlier identity checkpoint is replaced)."""
  return paths.check_output_dir(directory, inputs, marker=META_FILE, kind='identity checkpoint',
                                overwrite=overwrite, flag='--overwrite / overwrite=True')


def save_identity(directory: str, variables: Mapping[str, Any], meta: Mapping[str, Any], *,
                  overwrite: bool = False, inputs: Sequence[str] = ()) -> str:
  """Writes an identity checkpoint atomically (temp dir beside DIR, then rename).

  Args:
    directory: output DIR; must not exist unless `overwrite`.
    variables: {'params', 'batch_stats'} of the IResNet described by `meta` (checked).
    meta: identity.json dict (see `make_meta`).
    overwrite: replace an existing DIR that is an earlier identity checkpoint.
    inputs: files or folders the checkpoint was made from; DIR must not overlap them.

  Returns:
    The absolute output path. On any error nothing is left at DIR.

  Raises:
    paths.OutputError: see check_output.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  out = check_output(directory, overwrite=overwrite, inputs=inputs)
  variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
  check_variables(variables, module_from_meta(meta))
  with paths.atomic_dir(out) as tmp:
    tree = jax.tree.map(lambda a: np.asarray(a, np.float32), variables)
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, VARIABLES_DIR), tree)
    with open(os.path.join(tmp, META_FILE), 'w') as f:
      json.dump(dict(meta), f, indent=2)
  return out


def check_variables(variables: Mapping[str, Any], module) -> None:
  """Raises ValueError naming the first key whose presence or shape differs from `module`'s."""
  want = abstract_variables(module)
  got_flat = {jax.tree_util.keystr(k): v for k, v in
              jax.tree_util.tree_flatten_with_path(dict(variables))[0]}
  want_flat = {jax.tree_util.keystr(k): v for k, v in
               jax.tree_util.tree_flatten_with_path(dict(want))[0]}
  for key, spec in want_flat.items():
    if key not in got_flat:
      raise ValueError(f'missing variable {key}')
    if tuple(np.shape(got_flat[key])) != tuple(spec.shape):
      raise ValueError(f'shape mismatch at {key}: got {tuple(np.shape(got_flat[key]))}, '
                       f'expected {tuple(spec.shape)}')
  for key in got_flat:
    if key not in want_flat:
      raise ValueError(f'unexpected variable {key}')


def load_identity(directory: str, dtype: Any = 'float32', axis_name: str | None = None):
  """Loads an identity checkpoint.

  Args:
    directory: DIR with identity.json and variables/.
    dtype: compute dtype of the returned module ('float32' | 'bfloat16').
    axis_name: BatchNorm axis for the module (only matters in train mode).

  Returns:
    (module: IResNet, variables: {'params', 'batch_stats'} of jax arrays (fp32), meta dict).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  meta = read_meta(directory)
  module = module_from_meta(meta, dtype=dtype, axis_name=axis_name)
  target = abstract_variables(module)
  path = os.path.join(os.path.abspath(directory), VARIABLES_DIR)
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(path, target)
  variables = jax.tree.map(jnp.asarray, {'params': restored['params'],
                                         'batch_stats': restored['batch_stats']})
  return module, variables, meta


def normalise_faces(x) -> jax.Array:
  """uint8 [.., 0-255] -> (x - 127.5) / 127.5 float32; float inputs are taken as [-1, 1]."""
  x = jnp.asarray(x)
  if x.dtype == jnp.uint8:
    return (x.astype(jnp.float32) - 127.5) / 127.5
  return x.astype(jnp.float32)


class IdentityEncoder:
  """Callable: faces [B, 112, 112, 3] (uint8 0-255 or float [-1, 1]) -> [B, D] unit-norm.

  Attributes: module (IResNet), variables, meta (identity.json), embedding_dim.
  """

  def __init__(self, module, variables, meta):
    self.module, self.variables, self.meta = module, variables, meta
    self.embedding_dim = int(meta['embedding_dim'])

    def embed(variables, x):
      e = module.apply(variables, normalise_faces(x), train=False)
      return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)

    self._embed = jax.jit(embed)

  def __call__(self, faces) -> jax.Array:
    faces = jnp.asarray(faces)
    size = self.meta.get('input_size', arcface.INPUT_SIZE)  # older files lack the key
    if faces.ndim == 3:
      raise ValueError(f'expected a batch [B, {size}, {size}, 3], got {faces.shape} '
                       '(add a leading batch axis)')
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
      raise ValueError(f'expected aligned faces [B, {size}, {size}, 3], got {faces.shape}')
    return self._embed(self.variables, faces)


def load_identity_encoder(directory: str, dtype: Any = 'float32') -> Callable[[Any], jax.Array]:
  """Loads DIR and returns an IdentityEncoder (jit-compiled on first call).

  Args:
    directory: identity checkpoint dir (identity.json + variables/).
    dtype: compute dtype ('float32' | 'bfloat16').

  Returns:
    callable(faces [B, 112, 112, 3] uint8 0-255 or float [-1, 1]) -> [B, D] float32,
    L2-normalised embeddings. Faces must be aligned as meta['alignment'] says.
  """
  module, variables, meta = load_identity(directory, dtype=dtype)
  return IdentityEncoder(module, variables, meta)
