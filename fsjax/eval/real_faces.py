"""The FaceForensics++ protocol on real faces, for any list of (target, source[, swap]) jobs.

fsjax.eval.faceforensics (the FF++ folder and split) and fsjax.eval.folder (a pairs.csv)
make the jobs; `evaluate_jobs` scores them the same way:

1. Gallery: every identity of the set (a job's target or source media: for FF++ each
   original video) is sampled at `frames` evenly spaced frames (fsjax.eval.media); in each
   frame the largest face is detected (dlib, fsjax.faces.detect) and embedded by every
   recognizer; the identity's gallery entry is the mean embedding of its frames. With a
   swapper, its own identity encoder gives the source identity the same way (the mean
   embedding of the source's sampled frames, `Swapper.identity`).
2. Swaps: the target is read at the same indices. With a swapper each target frame's
   largest face gets the source identity (`Swapper.swap`, pasted back with its mask); with
   precomputed swaps the target and the swap file are read at the same indices, spread over
   the shorter of the two when their lengths differ (noted in the job's row).
3. Per scored frame (a face found in the target frame and in the swap frame): the swap's
   embedding is matched by cosine against the whole gallery (ID retrieval top-1 / top-5,
   hit = the source identity), and compared with the target frame's face for pose
   (fsjax.faces.pose.head_pose, degrees) and expression (pose.expression_descriptor), both
   from dlib's 68 landmarks. On every swapped frame (a face found in the swap or not): the
   fraction of pixels outside the paste-back mask left unchanged (metrics.unchanged_fraction;
   for precomputed swaps, whose mask is unknown, outside the target face's landmark hull
   with its forehead, dilated by a quarter of the face size: `swap_region`; lossy
   re-encoding of a swap video lowers it).

Skips are counted, never fatal: `missing_video` and `unreadable` count jobs whose target,
source or swap file is missing or does not decode; `no_face` counts frames without a face
in the target or the swap (and all frames of a job whose source has no face anywhere).
"""

import dataclasses
import hashlib
from typing import Any, Callable, Mapping, Optional, Sequence

import cv2
import numpy as np

from fsjax.eval import media as media_lib
from fsjax.eval import metrics
from fsjax.eval import report
from fsjax.train import metric_logging

NO_FACE = 'no_face'
SKIP_REASONS = (media_lib.MISSING, media_lib.UNREADABLE, NO_FACE)
SWAP_REGION_DILATION = 0.25  # of the face size (sqrt of the landmark hull area)
GRID_ROWS = 8
GRID_SIZE = 128


@dataclasses.dataclass(frozen=True)
class Job:
  """One swap to score.

  Attributes:
    name: row name ('<target>_<source>' for FF++).
    target, source: identity names (gallery keys).
    swap: precomputed swap file, or None (made by the swapper).
  """
  name: str
  target: str
  source: str
  swap: Optional[str] = None


@dataclasses.dataclass
class FaceFeatures:
  """What the protocol needs of the largest face of one frame."""
  face: Any  # fsjax.faces.detect.Face
  pose: np.ndarray  # (yaw, pitch, roll) degrees [3]
  expression: np.ndarray  # [102]
  embeddings: dict  # {recognizer: unit [D]}


class FeatureExtractor:
  """Largest face -> FaceFeatures, cached by frame content (a frame seen twice, e.g. a
  target read again for its swap, is detected once)."""

  def __init__(self, detector: Any, recognizers: Mapping[str, Callable]):
    self.detector = detector
    self.recognizers = dict(recognizers)
    self._cache = {}

  def __call__(self, frame: np.ndarray) -> Optional[FaceFeatures]:
    from fsjax.faces import pose  # pylint: disable=g-import-not-at-top
    frame = np.ascontiguousarray(frame)
    key = (frame.shape, hashlib.sha1(frame.tobytes()).hexdigest())
    if key not in self._cache:
      faces = self.detector.detect(frame)
      found = None
      if faces:
        face = max(faces, key=lambda f: f.area)
        found = FaceFeatures(
            face=face, pose=pose.head_pose(face.landmarks68, frame.shape),
            expression=pose.expression_descriptor(face.landmarks68),
            embeddings={n: np.asarray(r(frame, face), np.float64)
                        for n, r in self.recognizers.items()})
      self._cache[key] = found
    return self._cache[key]


def swap_region(face: Any, shape: Sequence[int]) -> np.ndarray:
  """bool [H, W]: the region a swap of `face` may touch (module doc, step 3)."""
  from fsjax.swap import blend  # pylint: disable=g-import-not-at-top
  hull = blend.hull_points(face.landmarks68)
  mask = np.zeros(tuple(shape[:2]), np.uint8)
  cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
  radius = int(round(SWAP_REGION_DILATION * np.sqrt(max(cv2.contourArea(
      hull.astype(np.float32)), 1.0))))
  if radius > 0:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    mask = cv2.dilate(mask, kernel)
  return mask > 0


def _unit(x: np.ndarray) -> np.ndarray:
  return x / max(float(np.linalg.norm(x)), 1e-12)


def _crop(frame: np.ndarray, face: Any) -> np.ndarray:
  from fsjax.faces import align  # pylint: disable=g-import-not-at-top
  return np.asarray(align.align_face(frame, face, 'ffhq', GRID_SIZE)[0], np.uint8)


def _mean_or_nan(values: Sequence[float]) -> float:
  return float(np.mean(values)) if len(values) else float('nan')


class _Scorer:
  """Accumulates the per-frame figures of all jobs."""

  def __init__(self, recognizer_names: Sequence[str]):
    self.names = list(recognizer_names)
    self.queries = {n: [] for n in self.names}
    self.true = []  # the source identity of each scored frame
    self.cos_source = {n: [] for n in self.names}
    self.cos_target = {n: [] for n in self.names}
    self.pose, self.expression, self.unchanged = [], [], []


def evaluate_jobs(jobs: Sequence[Job], identities: Mapping[str, str], *, frames: int = 10,
                  swapper: Any = None, detector: Any = None,
                  recognizers: Optional[Mapping[str, Callable]] = None,
                  primary: str = 'dlib', progress: bool = True) -> tuple[dict, np.ndarray]:
  """Scores every job (module doc).

  Args:
    jobs: the swaps.
    identities: {identity name: media path (image or video)}: the gallery, and the target
      and source media of the jobs.
    frames: frames sampled per video.
    swapper: a fsjax.swap.swapper.Swapper for jobs without a precomputed swap.
    detector: face detector (default fsjax.faces.detect.DlibDetector()).
    recognizers: {name: face embedder (frame, Face) -> [D]} (default: dlib's descriptor).
    primary: the recognizer of the top-level ID figures.
    progress: a progress line with ETA on stderr.

  Returns:
    (result dict: top-level figures, 'recognizers', 'skipped', 'videos' rows; grid uint8
     image of sample swaps: source | target | swap face crops, empty when nothing scored).
  """
  from fsjax.eval import recognizers as recognizers_lib  # pylint: disable=g-import-not-at-top
  if detector is None:
    from fsjax.faces import detect  # pylint: disable=g-import-not-at-top
    detector = detect.DlibDetector()
  if recognizers is None:
    recognizers = {recognizers_lib.DLIB: recognizers_lib.dlib_embedder(detector)}
  if primary not in recognizers:
    raise ValueError(f'primary recognizer {primary!r} not in {sorted(recognizers)}')
  if swapper is None and any(j.swap is None for j in jobs):
    raise ValueError('jobs without a precomputed swap need a swapper')
  extract = FeatureExtractor(detector, recognizers)
  skipped = {reason: 0 for reason in SKIP_REASONS}

  # Probe everything first: the progress total, and skips known before any work.
  probed, problems = {}, {}
  for path in sorted(set(identities.values()) | {j.swap for j in jobs if j.swap}):
    try:
      probed[path] = media_lib.probe(path)
    except media_lib.MediaError as e:
      problems[path] = e
  sample = {p: media_lib.sample_indices(m.num_frames, frames) for p, m in probed.items()}
  used = sorted({j.target for j in jobs} | {j.source for j in jobs})
  total = sum(len(sample[identities[i]]) for i in used if identities[i] in sample)
  total += sum(len(sample[identities[j.target]]) for j in jobs if identities[j.target] in sample)
  bar = metric_logging.CountProgress(total, 'frames', enabled=progress, label='eval')

  # 1. Gallery (and the swapper's source identities).
  gallery, z_source, source_crop, gallery_rows = {}, {}, {}, {}
  for name in used:
    path = identities[name]
    if path not in probed:
      gallery_rows[name] = {'media': path, 'error': problems[path].reason}
      continue
    try:
      images = media_lib.read_frames(probed[path], sample[path])
    except media_lib.MediaError as e:
      problems[path] = e
      gallery_rows[name] = {'media': path, 'error': e.reason}
      bar.update(len(sample[path]))
      continue
    found = []
    for image in images:
      found.append((image, extract(image)))
      bar.update(1)
    with_face = [(im, f) for im, f in found if f is not None]
    gallery_rows[name] = {'media': path, 'frames': len(found), 'faces': len(with_face)}
    if not with_face:
      continue
    gallery[name] = {n: _unit(np.mean([f.embeddings[n] for _, f in with_face], axis=0))
                     for n in recognizers}
    source_crop[name] = _crop(with_face[0][0], with_face[0][1].face)
    if swapper is not None:
      z_source[name] = swapper.identity([im for im, _ in with_face],
                                        detected=[f.face for _, f in with_face])
  gallery_names = sorted(gallery)
  gallery_index = {n: i for i, n in enumerate(gallery_names)}
  gallery_emb = {r: np.stack([gallery[n][r] for n in gallery_names]) if gallery_names
                 else np.zeros((0, 1)) for r in recognizers}

  # 2.-3. Swaps.
  scorer = _Scorer(list(recognizers))
  rows, grid_rows = [], []
  for job in jobs:
    row = {'name': job.name, 'target': job.target, 'source': job.source}
    rows.append(row)
    target_path = identities[job.target]
    if job.swap:
      row['swap'] = job.swap
    bad = [p for p in (target_path, identities[job.source], job.swap) if p and p in problems]
    if bad:
      reason = problems[bad[0]].reason
      skipped[reason] += 1
      row.update(skipped=reason, error=str(problems[bad[0]]))
      bar.update(len(sample.get(target_path, ())))
      continue
    n_target = probed[target_path].num_frames
    if job.swap:
      n_swap = probed[job.swap].num_frames
      n = min(n_target, n_swap)
      row['lengths'] = {'target': n_target, 'swap': n_swap}
      if n_target != n_swap:
        row['note'] = (f'target has {n_target} frames, swap {n_swap}: frames spaced over '
                       f'the shorter ({n})')
    else:
      n = n_target
      row['lengths'] = {'target': n_target}
    indices = media_lib.sample_indices(n, frames)
    row['frame_indices'] = indices
    planned = len(sample[target_path])
    source_ok = job.source in gallery and (job.swap or job.source in z_source)
    try:
      targets = media_lib.read_frames(probed[target_path], indices)
      swaps = (media_lib.read_frames(probed[job.swap], indices) if job.swap else None)
    except media_lib.MediaError as e:
      skipped[e.reason] += 1
      row.update(skipped=e.reason, error=str(e))
      bar.update(planned)
      continue
    scored = no_face = 0
    per_frame = {'top1': [], 'pose': [], 'expression': [], 'unchanged': []}
    for k, target in enumerate(targets):
      bar.update(1)
      t_feat = extract(target)
      if t_feat is None or not source_ok:
        no_face += 1
        continue
      if job.swap:
        swap = swaps[k]
        region = swap_region(t_feat.face, target.shape)
      else:
        result = swapper.swap(z_source[job.source], target, faces=[t_feat.face],
                              return_crops=True)
        swap, region = result.image, result.mask > 0
      # A paste-back property: measured on every swapped frame, face found in it or not.
      unchanged = (float(metrics.unchanged_fraction(swap, target, region))
                   if swap.shape == target.shape else float('nan'))
      scorer.unchanged.append(unchanged)
      per_frame['unchanged'].append(unchanged)
      s_feat = extract(swap)
      if s_feat is None:
        no_face += 1
        continue
      scored += 1
      for r in recognizers:
        q = s_feat.embeddings[r]
        scorer.queries[r].append(q)
        scorer.cos_source[r].append(float(q @ gallery[job.source][r]))
        scorer.cos_target[r].append(float(q @ gallery[job.target][r])
                                    if job.target in gallery else float('nan'))
      scorer.true.append(gallery_index[job.source])
      pose_err = metrics.pose_error(s_feat.pose, t_feat.pose)
      expr_err = metrics.expression_error(s_feat.expression, t_feat.expression)
      scorer.pose.append(pose_err)
      scorer.expression.append(expr_err)
      ranks = metrics.retrieval_ranks(s_feat.embeddings[primary][None], gallery_emb[primary],
                                      [gallery_index[job.source]])
      per_frame['top1'].append(float(ranks[0] < 1))
      per_frame['pose'].append(pose_err)
      per_frame['expression'].append(expr_err)
      if len(grid_rows) < GRID_ROWS and scored == 1:  # each job's first scored frame
        grid_rows.append((source_crop[job.source], _crop(target, t_feat.face),
                          _crop(swap, t_feat.face) if swap.shape == target.shape
                          else _crop(swap, s_feat.face)))
    bar.update(planned - len(targets))  # frames planned over the target's own length
    skipped[NO_FACE] += no_face
    row.update(frames=scored, no_face=no_face,
               id_retrieval_top1=_mean_or_nan(per_frame['top1']),
               pose_error=_mean_or_nan(per_frame['pose']),
               expression_error=_mean_or_nan(per_frame['expression']),
               unchanged_outside_mask=_mean_or_nan(per_frame['unchanged']))
    if not source_ok:
      row['note'] = '; '.join(filter(None, [row.get('note'), 'no face in any sampled frame '
                                            'of the source: every frame counted as no_face']))
  bar.finish()

  per_recognizer = {}
  for r in recognizers:
    if scorer.true:
      ret = metrics.id_retrieval(np.stack(scorer.queries[r]), gallery_emb[r], scorer.true,
                                 ks=(1, 5))
    else:
      ret = {1: float('nan'), 5: float('nan')}
    per_recognizer[r] = {'id_retrieval_top1': ret[1], 'id_retrieval_top5': ret[5],
                         'cos_source': _mean_or_nan(scorer.cos_source[r]),
                         'cos_target': float(np.nanmean(scorer.cos_target[r]))
                         if scorer.cos_target[r] else float('nan')}
  main = per_recognizer[primary]
  result = {
      'id_retrieval_top1': main['id_retrieval_top1'],
      'id_retrieval_top5': main['id_retrieval_top5'],
      'cos_source': main['cos_source'],
      'cos_target': main['cos_target'],
      'pose_error': _mean_or_nan(scorer.pose),
      'expression_error': _mean_or_nan(scorer.expression),
      'unchanged_outside_mask': (float(np.nanmean(scorer.unchanged))
                                 if np.isfinite(scorer.unchanged).any() else float('nan')),
      'num_frames': len(scorer.true),
      'num_videos': sum(1 for row in rows if row.get('frames')),
      'num_jobs': len(jobs),
      'num_identities': len(gallery_names),
      'skipped': skipped,
      'recognizers': per_recognizer,
      'primary_recognizer': primary,
      'frames_per_video': frames,
      'videos': rows,
      'gallery': gallery_rows,
  }
  grid = _grid(grid_rows)
  return result, grid


def _grid(rows: Sequence[tuple[np.ndarray, ...]]) -> np.ndarray:
  if not rows:
    return np.zeros((0, 0, 3), np.uint8)
  from fsjax.train import metric_logging  # pylint: disable=g-import-not-at-top
  return metric_logging.image_grid([np.stack([r[c] for r in rows]) for c in range(3)])


def format_report(result: Mapping[str, Any], title: str) -> str:
  """Console summary: the figures per recognizer, counts and skips."""
  rows = []
  for name, fig in result['recognizers'].items():
    rows.append([name + (' *' if name == result['primary_recognizer'] else ''),
                 fig['id_retrieval_top1'], fig['id_retrieval_top5'], fig['cos_source'],
                 fig['cos_target']])
  skipped = ', '.join(f'{k} {v}' for k, v in result['skipped'].items())
  return '\n'.join([
      f'{title}: {result["num_videos"]} of {result["num_jobs"]} swaps scored, '
      f'{result["num_frames"]} frames, {result["num_identities"]} identities in the gallery',
      report.table(rows, ('recognizer', 'ID top-1', 'ID top-5', 'cos src', 'cos tgt')),
      report.table([['pose error (deg)', result['pose_error']],
                    ['expression error', result['expression_error']],
                    ['unchanged outside mask', result['unchanged_outside_mask']]],
                   ('landmark figures', 'value')),
      f'skipped: {skipped}'])
