"""The synthetic protocol: the FaceForensics++ figures on synthetic_faces pairs, plus
fidelity to the ground-truth swap, which only synthetic data has.

Each held-out pair of synthetic_faces/pairsN (identities never seen in training) holds
X_s, X_t, the correct swap GT = render(identity of X_s, attributes of X_t, the scalp hair
laid out on X_t's head), the source and target identity and target attribute parameters, and
both identity labels. The swapper's output is Y = G(X_t, z_id(X_s)) on the crop (the pairs
are already aligned, as the training data).
For Y, and as `reference` for GT (the ceiling) and for the trivial answers "return X_t"
and "return X_s" (the floors), `answer_figures` reports:

- psnr, ssim: to GT over the whole image (fsjax.eval.metrics; PSNR averaged with +inf
  capped at metrics.PSNR_CAP = 100 dB, so GT itself scores 100);
- psnr_face, ssim_face: the same inside the face region: GT's face outline as the renderer
  draws it (`face_region`: the coverage of the skin ellipse with its jaw, before hair,
  brows or occluders are painted over it, > 0.5), i.e. where the source's face sits in the
  target's pose;
- id_retrieval_top1 / top5: the answer's embedding, by an independent recognizer (another
  architecture and seed than the training ArcFace, configs/arcface_eval_recognizer.py),
  matched by cosine against every held-out identity of the pairs (the mean embedding of
  that identity's X_s and X_t images), the source's identity counting as a hit, exactly as
  the FF++ protocol matches swaps against the mean embedding of each original video;
  cos_source / cos_target: mean cosine to the pair's X_s / X_t;
- pose_error: mean L2 of (yaw, pitch, roll) in degrees between the answer and X_t, both
  estimated from pixels by the regressor of fsjax.eval.regressor (as the FF++ protocol
  compares Hopenet on swap and target); expression_error: mean L2 of its six expression
  parameters likewise; the regressor's own held-out error is reported with them;
- unchanged_outside_mask: the fraction of pixels outside the face region equal to X_t's
  (metrics.unchanged_fraction). The generator repaints the whole crop, so for Y this
  measures how much of the target's surroundings it reproduced bit-exactly (real frames get
  1.0 from the paste-back); GT shows how much a correct swap changes there (ears, outline,
  neck colour).

On occluded pairs (synthetic_faces/occludedN, whose records carry `occluder_mask`) every
answer also gets psnr_occluder: PSNR to GT inside the occluder (coverage > 0.5), HEAR-Net's
figure. A swapper with a HEAR-Net is scored as AEI-Net + HEAR-Net (Y) and, as reference
'aei', as AEI-Net alone.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Optional

import ml_collections
import numpy as np

from fsjax.data import synthetic_faces
from fsjax.eval import metrics
from fsjax.eval import report
from fsjax.train import metric_logging

CropEmbedder = Callable[[np.ndarray], np.ndarray]
FIGURES = ('psnr', 'ssim', 'psnr_face', 'ssim_face', 'id_retrieval_top1',
           'id_retrieval_top5', 'cos_source', 'cos_target', 'pose_error', 'expression_error',
           'unchanged_outside_mask')
AEI_ONLY = 'aei'  # the reference answer of a swapper with a HEAR-Net: AEI-Net alone
OCCLUDER_THRESHOLD = 127  # occluder_mask value (0-255) above which a pixel is occluded
FACE_THRESHOLD = 0.5  # renderer coverage above which a pixel is in the face region
INDEPENDENT = 'independent'  # the recognizer whose figures are the top-level ones
TRAINING = 'train'  # the swapper's own identity encoder (information only)


@dataclasses.dataclass
class Estimators:
  """What scores the answers.

  Attributes:
    pose_expression: has `predict(uint8 [N, S, S, 3]) -> (pose degrees [N, 3],
      expression [N, E])` and `held_out` (its own errors on unseen identities).
    recognizers: {name: crop embedder uint8 [N, S, S, 3] -> unit [N, D]}; must hold
      `primary`.
    primary: the recognizer of the top-level ID figures (INDEPENDENT).
    info: what to record about the estimators in eval.json.
  """
  pose_expression: Any
  recognizers: Mapping[str, CropEmbedder]
  primary: str = INDEPENDENT
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def load_pairs(name: str, data_dir: str = '', split: str = 'test',
               num_pairs: Optional[int] = None) -> dict:
  """The pairs of a synthetic_faces pairs config (built first when missing).

  Returns:
    {'source', 'target', 'swap': uint8 [N, S, S, 3], 'source_label', 'target_label':
     int64 [N], 'identity_params': float32 [N, 44] (of the source), 'attribute_params':
     float32 [N, 46] (of the target), 'target_identity_params': float32 [N, 44] (of the
     target: the ground truth's hair head, dataset 3.0.0)}, plus 'occluder': bool [N, S, S]
     on occluded pairs.
  """
  from fsjax.data import build  # pylint: disable=g-import-not-at-top
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  build.ensure_dataset(name, data_dir or None)
  source = input_pipeline.create_data_source(
      ml_collections.ConfigDict({'name': name, 'data_dir': data_dir}), split)
  n = len(source) if not num_pairs else min(int(num_pairs), len(source))
  records = source.__getitems__(list(range(n))) if n else []
  out = {k: np.stack([np.asarray(r[k], np.uint8) for r in records])
         for k in ('source', 'target', 'swap')} if n else {}
  if n and 'occluder_mask' in records[0]:
    out['occluder'] = np.stack([np.asarray(r['occluder_mask'], np.uint8).reshape(
        out['swap'].shape[1:3]) > OCCLUDER_THRESHOLD for r in records])
  for k, dtype in (('source_label', np.int64), ('target_label', np.int64),
                   ('identity_params', np.float32), ('attribute_params', np.float32),
                   ('target_identity_params', np.float32)):
    if n and k in records[0]:
      out[k] = np.stack([np.asarray(r[k], dtype) for r in records])
  return out


def face_region(identity_params: np.ndarray, attribute_params: np.ndarray, size: int,
                target_identity_params: Optional[np.ndarray] = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """(bool [N, S, S] face region of GT (module doc), uint8 [N, S, S, 3] GT re-rendered).

  target_identity_params [N, 44]: the head GT's hair is laid out on (the pairs' target,
  dataset 3.0.0); None: the source's own head."""
  masks, images = [], []
  for i in range(0, len(identity_params), 64):
    hair = None if target_identity_params is None else target_identity_params[i:i + 64]
    image, alpha = synthetic_faces.render_batch(identity_params[i:i + 64],
                                                attribute_params[i:i + 64], size,
                                                return_face_mask=True, hair_identity=hair)
    images.append(image)
    masks.append(alpha > FACE_THRESHOLD)
  return np.concatenate(masks), np.concatenate(images)


def identity_gallery(embeddings: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(gallery labels [I], unit mean embeddings [I, D]) of every identity appearing as a
  source or target: the mean of its X_s and X_t embeddings."""
  all_labels = np.concatenate([labels['source'], labels['target']])
  all_emb = np.concatenate([embeddings['source'], embeddings['target']])
  ids = np.unique(all_labels)
  gallery = np.stack([all_emb[all_labels == i].mean(axis=0) for i in ids])
  return ids, gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)


def identity_figures(query: np.ndarray, pairs_emb: Mapping[str, np.ndarray],
                     gallery: tuple[np.ndarray, np.ndarray], source_label: np.ndarray
                     ) -> dict:
  """ID retrieval top-1 / top-5 of query embeddings [N, D] against the gallery (hit = the
  pair's source identity), and the mean cosine to the pair's X_s and X_t."""
  ids, emb = gallery
  retrieval = metrics.id_retrieval(query, emb, source_label, ks=(1, 5), gallery_labels=ids)
  return {'id_retrieval_top1': retrieval[1], 'id_retrieval_top5': retrieval[5],
          'cos_source': metrics.mean_cosine(query, pairs_emb['source']),
          'cos_target': metrics.mean_cosine(query, pairs_emb['target'])}


def evaluate_answers(answers: Mapping[str, np.ndarray], pairs: Mapping[str, np.ndarray],
                     estimators: Estimators) -> dict:
  """Every figure of FIGURES for each answer uint8 [N, S, S, 3] ({'swap': Y, ...}).

  Returns:
    {'figures': {answer: {figure: value}}, 'recognizers': {name: {answer: identity
     figures}}, 'face_region_fraction', 'ground_truth_rerender_match'}.
  """
  xs, xt, gt = pairs['source'], pairs['target'], pairs['swap']
  size = xs.shape[1]
  face, rerendered = face_region(pairs['identity_params'], pairs['attribute_params'], size,
                                 pairs.get('target_identity_params'))
  labels = {'source': pairs['source_label'], 'target': pairs['target_label']}
  pose_t, expr_t = estimators.pose_expression.predict(xt)
  figures = {name: {} for name in answers}
  per_recognizer = {}
  for rec_name, embed in estimators.recognizers.items():
    pairs_emb = {'source': embed(xs), 'target': embed(xt)}
    gallery = identity_gallery(pairs_emb, labels)
    per_recognizer[rec_name] = {}
    for name, answer in answers.items():
      # X_s and X_t are answers too: reuse their embeddings.
      query = pairs_emb['source'] if answer is xs else (
          pairs_emb['target'] if answer is xt else embed(answer))
      per_recognizer[rec_name][name] = identity_figures(query, pairs_emb, gallery,
                                                        labels['source'])
  for name, answer in answers.items():
    fig = figures[name]
    fig['psnr'] = metrics.mean_psnr(metrics.psnr(answer, gt))
    fig['ssim'] = metrics.mean_ssim(metrics.ssim(answer, gt))
    fig['psnr_face'] = metrics.mean_psnr(metrics.psnr(answer, gt, mask=face))
    fig['ssim_face'] = metrics.mean_ssim(metrics.ssim(answer, gt, mask=face))
    fig.update(per_recognizer[estimators.primary][name])
    pose_a, expr_a = (pose_t, expr_t) if answer is xt else (
        estimators.pose_expression.predict(answer))
    fig['pose_error'] = metrics.pose_error(pose_a, pose_t)
    fig['expression_error'] = metrics.expression_error(expr_a, expr_t)
    fig['unchanged_outside_mask'] = float(np.nanmean(
        metrics.unchanged_fraction(answer, xt, face)))
    if 'occluder' in pairs:
      fig['psnr_occluder'] = metrics.mean_psnr(metrics.psnr(answer, gt,
                                                            mask=pairs['occluder']))
  return {'figures': figures, 'recognizers': per_recognizer,
          'face_region_fraction': float(face.mean()),
          'ground_truth_rerender_match': float(np.mean(np.all(rerendered == gt,
                                                              axis=(1, 2, 3))))}


def generate_swaps(swapper: Any, sources: np.ndarray, targets: np.ndarray,
                   progress: bool = True, batch: int = 64,
                   hear: Optional[bool] = None) -> np.ndarray:
  """Y = G(X_t, z_id(X_s)) as uint8 [N, S, S, 3], in batches (progress with ETA); `hear`
  as in Swapper.generate (None: refined by the swapper's HEAR-Net when it uses one)."""
  bar = metric_logging.CountProgress(len(sources), 'pairs', enabled=progress, label='eval')
  out = []
  for i in range(0, len(sources), batch):
    z = swapper.embed_crops(sources[i:i + batch])
    y = swapper.generate(targets[i:i + batch], z, hear=hear)
    out.append(np.clip(np.rint(y), 0, 255).astype(np.uint8))
    bar.update(len(z))
  bar.finish()
  return np.concatenate(out)


def evaluate_swapper(swapper: Any, pairs: Mapping[str, np.ndarray], estimators: Estimators,
                     progress: bool = False) -> dict:
  """All figures for `swapper` (fsjax.swap.swapper.Swapper) on `pairs` (see load_pairs).

  Returns:
    {FIGURES of Y..., 'num_pairs', 'hear', 'reference': {'ground_truth' | 'target' |
     'source' (| 'aei' with a HEAR-Net): {FIGURES}}, 'recognizers': {name: {answer: ID
     figures}}, 'estimators', ..., 'swaps': uint8 [N, S, S, 3] (Y) (and 'swaps_aei')}.
  """
  xs, xt = pairs['source'], pairs['target']
  if xs.shape[1] != swapper.image_size:
    raise ValueError(f'pairs are {xs.shape[1]} px but the swapper runs at '
                     f'{swapper.image_size} px')
  y = generate_swaps(swapper, xs, xt, progress)
  answers = {'swap': y, 'ground_truth': pairs['swap'], 'target': xt, 'source': xs}
  hear = bool(swapper.has_hear and swapper.use_hear)
  if hear:
    answers[AEI_ONLY] = generate_swaps(swapper, xs, xt, progress, hear=False)
  scored = evaluate_answers(answers, pairs, estimators)
  result = {'protocol': 'synthetic', 'hear': hear}
  result.update(scored['figures']['swap'])
  result['num_pairs'] = int(len(xs))
  result['reference'] = {name: scored['figures'][name] for name in answers if name != 'swap'}
  if 'occluder' in pairs:
    result['occluder_region'] = {
        'definition': f'occluder_mask of the pairs > {OCCLUDER_THRESHOLD} (of 255)',
        'fraction_of_pixels': float(pairs['occluder'].mean())}
  result['recognizers'] = scored['recognizers']
  result['estimators'] = dict(estimators.info)
  result['face_region'] = {
      'definition': 'ground-truth swap face outline from the renderer (skin ellipse and '
                    f'jaw, coverage > {FACE_THRESHOLD})',
      'fraction_of_pixels': scored['face_region_fraction'],
      'ground_truth_rerender_match': scored['ground_truth_rerender_match']}
  result['psnr_cap_db'] = metrics.PSNR_CAP
  result['swaps'] = y
  if hear:
    result['swaps_aei'] = answers[AEI_ONLY]
  return result


_ROWS = (('swap', 'swap (Y)'), (AEI_ONLY, 'AEI-Net alone'), ('ground_truth', 'ground truth'),
         ('target', 'return X_t'), ('source', 'return X_s'))


def format_report(result: Mapping[str, Any]) -> str:
  """The console summary: one table row per answer, then the estimators' own errors."""
  rows = []
  occluded = 'psnr_occluder' in result
  for key, label in _ROWS:
    if key != 'swap' and key not in result['reference']:
      continue
    fig = result if key == 'swap' else result['reference'][key]
    if key == 'swap' and result.get('hear'):
      label = 'swap (AEI + HEAR)'
    rows.append([label, fig['psnr'], fig['ssim'], fig['psnr_face']]
                + ([fig['psnr_occluder']] if occluded else [])
                + [fig['id_retrieval_top1'], fig['id_retrieval_top5'], fig['pose_error'],
                   fig['expression_error'], fig['unchanged_outside_mask']])
  header = ('', 'PSNR', 'SSIM', 'PSNR face') + (('PSNR occl.',) if occluded else ()) + (
      'ID top-1', 'ID top-5', 'pose err', 'expr err', 'unchanged')
  lines = [f'synthetic protocol: {result["num_pairs"]} held-out pairs'
           + (' (occluded targets)' if occluded else ''), report.table(rows, header)]
  est = result.get('estimators', {})
  held = est.get('pose_expression', {}).get('held_out', {})
  if held:
    lines.append(f'pose / expression estimator, own held-out error: pose '
                 f'{held["pose_error"]:.2f} deg, expression {held["expression_error"]:.3f} '
                 f'({held["num_images"]} images of unseen identities)')
  ver = est.get('recognizer', {}).get('verification')
  if ver:
    lines.append(f'independent recognizer, held-out verification accuracy '
                 f'{100 * ver["accuracy"]:.2f}% (TAR@FAR={ver["far"]:g} {ver["tar_at_far"]:.3f})')
  for name, scores in result.get('recognizers', {}).items():
    s = scores['swap']
    lines.append(f'ID [{name}]: top-1 {s["id_retrieval_top1"]:.3f}, top-5 '
                 f'{s["id_retrieval_top5"]:.3f}, cos to X_s {s["cos_source"]:.3f}, to X_t '
                 f'{s["cos_target"]:.3f}')
  return '\n'.join(lines)


def build_estimators(config: ml_collections.ConfigDict, crop_mode: str,
                     extra_recognizers: Mapping[str, CropEmbedder] = (), data_dir: str = '',
                     cache_dir: str = '', log: Callable[[str], None] = print) -> Estimators:
  """The cached (or first built) estimators of configs/eval_estimators.py.

  Args:
    config: the estimators config (`regressor`, `recognizer` blocks).
    crop_mode: how the recognizers read a crop ('resize' for synthetic faces).
    extra_recognizers: more {name: crop embedder} (the swapper's own, --recognizer ones).
    data_dir, cache_dir, log: see fsjax.eval.estimators.
  """
  from fsjax.eval import estimators as estimators_lib  # pylint: disable=g-import-not-at-top
  from fsjax.eval import recognizers  # pylint: disable=g-import-not-at-top
  pose_expression = estimators_lib.attribute_estimator(config.regressor, data_dir, cache_dir,
                                                       log)
  identity_dir = estimators_lib.independent_recognizer(config.recognizer, data_dir, cache_dir,
                                                       log)
  found = {INDEPENDENT: recognizers.crop_embedder(identity_dir, crop_mode)}
  for name, embed in dict(extra_recognizers).items():
    if name in found:
      raise ValueError(f'recognizer name {name!r} is reserved')
    found[name] = embed
  info = {
      'pose_expression': {
          'what': 'CNN regressor of the renderer yaw/pitch/roll (degrees) and expression '
                  'parameters ' + ', '.join(pose_expression.meta['fields'][3:]),
          'path': pose_expression.path,
          'held_out': pose_expression.held_out},
      'recognizer': {
          'what': 'independent ArcFace (configs/arcface_eval_recognizer.py)',
          'path': identity_dir,
          'verification': estimators_lib.recognizer_verification(identity_dir)}}
  return Estimators(pose_expression, found, INDEPENDENT, info)


def run(checkpoint: str, *, pairs_name: str = '', data_dir: str = '', num_pairs: int = 0,
        recognizers: Mapping[str, str] = (), estimators_config: ml_collections.ConfigDict,
        cache_dir: str = '', output_dir: str = '', progress: bool = True,
        log: Callable[[str], None] = print) -> dict:
  """`fsjax eval --protocol synthetic`: scores a workdir/export, writes eval.json + grid.

  Args:
    checkpoint: training workdir (EMA params of its latest checkpoint) or export dir.
    pairs_name: TFDS pairs dataset; default synthetic_faces/pairs<image_size>.
    data_dir: TFDS data dir ('' = default) of the pairs and of the estimators' data.
    num_pairs: how many held-out pairs (0 = all).
    recognizers: extra {name: identity checkpoint dir}, scored like the independent one.
    estimators_config: configs/eval_estimators.py.
    cache_dir: estimator cache root ('' = $FSJAX_CACHE or ~/.cache/fsjax).
    output_dir: where eval.json and eval_grid.png go ('' = <checkpoint>/eval).
    progress: progress lines with ETA on stderr.
    log: status lines.

  Returns:
    The eval.json content.
  """
  from fsjax.eval import recognizers as recognizers_lib  # pylint: disable=g-import-not-at-top
  from fsjax.swap import swapper as swapper_lib  # pylint: disable=g-import-not-at-top
  from fsjax.train import metric_logging  # pylint: disable=g-import-not-at-top
  output_dir = report.check_output(output_dir or os.path.join(checkpoint, 'eval'))
  start = time.perf_counter()
  swapper = swapper_lib.load_swapper(checkpoint)
  pairs_name = pairs_name or f'synthetic_faces/pairs{swapper.image_size}'
  pairs = load_pairs(pairs_name, data_dir, num_pairs=num_pairs or None)
  if not pairs:
    from fsjax.eval import errors  # pylint: disable=g-import-not-at-top
    raise errors.EvalInputError(f'{pairs_name} has no test pairs')
  extra = {TRAINING: swapper.unit_embeddings}  # embed_crops is G's z_id: raw for GHOST
  for name, directory in dict(recognizers).items():
    extra[name] = recognizers_lib.crop_embedder(directory, swapper.identity_crop_mode)
  estimators = build_estimators(estimators_config, swapper.identity_crop_mode, extra, data_dir,
                                cache_dir, log)
  result = evaluate_swapper(swapper, pairs, estimators, progress)
  swaps = result.pop('swaps')
  swaps_aei = result.pop('swaps_aei', None)
  result['checkpoint'] = os.path.abspath(checkpoint)
  result['pairs'] = pairs_name
  result['source'] = swapper.meta.get('source', {})
  result['wall_s'] = time.perf_counter() - start
  rows = slice(0, 8)
  # Columns: X_s | X_t | Y | GT, or X_s | X_t | AEI | AEI + HEAR | GT with a HEAR-Net.
  middle = [swaps[rows]] if swaps_aei is None else [swaps_aei[rows], swaps[rows]]
  grid = metric_logging.image_grid([pairs['source'][rows], pairs['target'][rows], *middle,
                                    pairs['swap'][rows]])
  report.write_outputs(output_dir, result, grid)
  result['output'] = output_dir
  return result
