"""Swap quality on the synthetic_faces `pairs` split, where the correct swap is known.

For each held-out pair (X_s, X_t, GT = render(identity of X_s, attributes of X_t)) the
swapper produces Y = G(X_t, z_id(X_s)) and we report:

- identity transfer, per recognizer: the fraction of pairs whose swap embedding is closer
  (cosine) to the source than to the target, and the mean cosines. A recognizer other than
  the one used in training (another seed and architecture, `--recognizer`) keeps the metric
  from being the training loss itself. The same figures for GT show what a perfect swap
  scores under that recognizer.
- error to the ground-truth swap: mean squared error in [0, 1] pixels of Y, and of the two
  trivial answers (return X_t, return X_s). "G copies the target" shows up as Y's error
  close to X_t's and an identity fraction near 0.
"""

import json
import os
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Embedder = Callable[[np.ndarray], np.ndarray]


def crop_embedder(identity_dir: str, crop_mode: str, batch_size: int = 64) -> Embedder:
  """An embedder for aligned faces uint8 [N, S, S, 3] from an identity checkpoint dir.

  The S px face is cut to the 112 ArcFace input with `identity_crop(mode=crop_mode)`;
  returns L2-normalised float32 [N, D].
  """
  from fsjax import identity  # pylint: disable=g-import-not-at-top
  from fsjax.models import arcface  # pylint: disable=g-import-not-at-top
  module, variables, _ = identity.load_identity(identity_dir)

  @jax.jit
  def embed(crops):
    x = crops.astype(jnp.float32) / 127.5 - 1.0
    e = module.apply(variables, arcface.identity_crop(x, crop_mode), train=False)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True).clip(1e-12)

  def run(crops: np.ndarray) -> np.ndarray:
    out = [np.asarray(embed(crops[i:i + batch_size])) for i in range(0, len(crops), batch_size)]
    return np.concatenate(out)

  return run


def identity_scores(embed: Embedder, swaps: np.ndarray, sources: np.ndarray,
                    targets: np.ndarray) -> dict:
  """Identity transfer of swaps [N, S, S, 3] uint8 under one recognizer.

  Returns:
    {'closer_to_source': fraction in [0, 1], 'cos_source': mean cosine to X_s,
     'cos_target': mean cosine to X_t}.
  """
  e_y, e_s, e_t = embed(swaps), embed(sources), embed(targets)
  cos_s = np.sum(e_y * e_s, axis=-1)
  cos_t = np.sum(e_y * e_t, axis=-1)
  return {'closer_to_source': float(np.mean(cos_s > cos_t)),
          'cos_source': float(np.mean(cos_s)), 'cos_target': float(np.mean(cos_t))}


def mse(a: np.ndarray, b: np.ndarray) -> float:
  """Mean squared error of uint8/float images [N, S, S, 3] on the [0, 1] scale."""
  a = np.asarray(a, np.float64) / 255.0
  b = np.asarray(b, np.float64) / 255.0
  return float(np.mean((a - b) ** 2))


def load_pairs(name: str, data_dir: str = '', split: str = 'test',
               num_pairs: Optional[int] = None) -> dict:
  """{'source', 'target', 'swap'}: uint8 [N, S, S, 3] from a synthetic_faces pairs config.

  Builds the dataset first when it is missing (synthetic data builds offline).
  """
  from fsjax import input_pipeline  # pylint: disable=g-import-not-at-top
  from fsjax.data import build  # pylint: disable=g-import-not-at-top
  build.ensure_dataset(name, data_dir or None)
  source = input_pipeline.create_data_source(
      ml_collections.ConfigDict({'name': name, 'data_dir': data_dir}), split)
  n = len(source) if num_pairs is None else min(int(num_pairs), len(source))
  records = source.__getitems__(list(range(n))) if hasattr(source, '__getitems__') else [
      source[i] for i in range(n)]
  return {k: np.stack([np.asarray(r[k], np.uint8) for r in records])
          for k in ('source', 'target', 'swap')}


def evaluate_swapper(swapper, pairs: Mapping[str, np.ndarray],
                     recognizers: Mapping[str, Embedder]) -> dict:
  """All figures for `swapper` (fsjax.swapper.Swapper) on `pairs` (see load_pairs).

  Returns:
    {'num_pairs', 'mse': {'swap', 'target', 'source'}, 'identity': {name: {'swap': ...,
     'ground_truth': ...}}, 'swaps': uint8 [N, S, S, 3]}.
  """
  xs, xt, gt = pairs['source'], pairs['target'], pairs['swap']
  if xs.shape[1] != swapper.image_size:
    raise ValueError(f'pairs are {xs.shape[1]} px but the swapper runs at '
                     f'{swapper.image_size} px')
  z_id = swapper.embed_crops(xs)
  y = np.clip(np.round(swapper.generate(xt, z_id)), 0, 255).astype(np.uint8)
  result = {
      'num_pairs': int(len(xs)),
      'mse': {'swap': mse(y, gt), 'target': mse(xt, gt), 'source': mse(xs, gt)},
      'identity': {},
  }
  for name, embed in recognizers.items():
    result['identity'][name] = {'swap': identity_scores(embed, y, xs, xt),
                                'ground_truth': identity_scores(embed, gt, xs, xt)}
  result['swaps'] = y
  return result


def format_report(result: Mapping) -> str:
  """A few human-readable lines of evaluate_swapper's figures."""
  m = result['mse']
  lines = [f'pairs: {result["num_pairs"]}',
           f'MSE to ground-truth swap ([0,1] pixels): Y {m["swap"]:.5f} | '
           f'X_t {m["target"]:.5f} | X_s {m["source"]:.5f}  '
           f'-> Y beats both trivial answers: {m["swap"] < min(m["target"], m["source"])}']
  for name, scores in result['identity'].items():
    s, g = scores['swap'], scores['ground_truth']
    lines.append(f'identity [{name}]: Y closer to X_s than X_t in '
                 f'{100 * s["closer_to_source"]:.1f}% (cos to X_s {s["cos_source"]:.3f}, to X_t '
                 f'{s["cos_target"]:.3f}); ground truth: {100 * g["closer_to_source"]:.1f}%')
  return '\n'.join(lines)


def run_evaluation(checkpoint: str, *, pairs_name: str = '', data_dir: str = '',
                   num_pairs: Optional[int] = 1000, recognizers: Mapping[str, str] = (),
                   output_dir: str = '') -> dict:
  """`fsjax eval`: loads a workdir/export, scores it, writes eval.json and a grid PNG.

  Args:
    checkpoint: training workdir (EMA params of its latest checkpoint) or export dir.
    pairs_name: TFDS name of the pairs set; default synthetic_faces/pairs<image_size>.
    data_dir: TFDS data dir ('' = default).
    num_pairs: how many test pairs (None = all).
    recognizers: extra {name: identity checkpoint dir}; the swapper's own encoder is 'train'.
    output_dir: where eval.json and eval_grid.png go ('' = <checkpoint>/eval).
  """
  from fsjax import metric_logging  # pylint: disable=g-import-not-at-top
  from fsjax import swapper as swapper_lib  # pylint: disable=g-import-not-at-top
  swapper = swapper_lib.load_swapper(checkpoint)
  pairs = load_pairs(pairs_name or f'synthetic_faces/pairs{swapper.image_size}', data_dir,
                     num_pairs=num_pairs)
  embedders = {'train': swapper.embed_crops}
  for name, directory in dict(recognizers).items():
    embedders[name] = crop_embedder(directory, swapper.identity_crop_mode)
  result = evaluate_swapper(swapper, pairs, embedders)
  swaps = result.pop('swaps')
  result['checkpoint'] = os.path.abspath(checkpoint)
  result['source'] = swapper.meta.get('source', {})
  output_dir = output_dir or os.path.join(checkpoint, 'eval')
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, 'eval.json'), 'w') as f:
    json.dump(result, f, indent=2)
  rows = slice(0, 8)
  metric_logging.save_png(os.path.join(output_dir, 'eval_grid.png'), metric_logging.image_grid(
      [pairs['source'][rows], pairs['target'][rows], swaps[rows], pairs['swap'][rows]]))
  return result
