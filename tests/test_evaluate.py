"""fsjax.eval.synthetic: the synthetic protocol's figures on known answers (fake swappers
that return X_t or X_s, a pixel embedder and a pixel 'pose' estimator; no training)."""

import numpy as np
import pytest

from fsjax.data import synthetic_faces
from fsjax.eval import metrics
from fsjax.eval import synthetic


def _pairs(n=6, size=32):
  """n pairs of 2n distinct identities, as load_pairs returns them."""
  rng = np.random.default_rng(0)
  ids = np.stack([synthetic_faces.sample_identity(rng) for _ in range(2 * n)])
  atts = np.stack([synthetic_faces.sample_attributes(rng) for _ in range(2 * n)])
  src, tgt = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
  render = lambda i, a: synthetic_faces.render_batch(ids[i], atts[a], size)
  # The ground truth lays the hair out on the target's head, as synthetic_faces 3.0.0 does.
  swap = synthetic_faces.render_batch(ids[src], atts[tgt], size, hair_identity=ids[tgt])
  return {'source': render(src, src), 'target': render(tgt, tgt), 'swap': swap,
          'source_label': 100 + src, 'target_label': 100 + tgt,
          'identity_params': ids[src], 'attribute_params': atts[tgt],
          'target_identity_params': ids[tgt]}


class _FakeSwapper:
  """Returns the target (a copier) or the source as the swap; with `refined` it has a
  'HEAR-Net' whose output is that answer instead (AEI-Net alone still gives `answer`)."""

  image_size = 32

  def __init__(self, pairs, answer, refined=None):
    self._answers = {False: pairs[answer].astype(np.float32)}
    if refined:
      self._answers[True] = pairs[refined].astype(np.float32)
    self.has_hear = self.use_hear = bool(refined)
    self._next = {False: 0, True: 0}

  def embed_crops(self, crops):
    return np.zeros((len(crops), 4), np.float32)

  def generate(self, crops, z_id, hear=None):
    assert len(crops) == len(z_id)
    refine = self.has_hear and (self.use_hear if hear is None else hear)
    start = self._next[refine]
    self._next[refine] += len(crops)
    return self._answers[refine][start:start + len(crops)]


def _pixel_embedder(crops):
  x = crops.reshape(len(crops), -1).astype(np.float64)
  x -= x.mean(axis=1, keepdims=True)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


class _PixelPose:
  """'Pose' = mean colour, 'expression' = a few pixel values: equal images, equal answers."""

  held_out = {'pose_error': 1.5, 'expression_error': 0.1, 'num_images': 10}

  def predict(self, images):
    x = images.astype(np.float64)
    return x.mean(axis=(1, 2)), x[:, 10:13, 16, 0]


def _estimators():
  return synthetic.Estimators(_PixelPose(), {'independent': _pixel_embedder},
                              info={'pose_expression': {'held_out': _PixelPose.held_out}})


@pytest.fixture(scope='module')
def pairs():
  return _pairs()


def test_copying_the_target_is_diagnosed(pairs):
  result = synthetic.evaluate_swapper(_FakeSwapper(pairs, 'target'), pairs, _estimators())
  ref = result['reference']['target']
  for key in synthetic.FIGURES:
    assert result[key] == pytest.approx(ref[key]), key
  assert result['id_retrieval_top1'] == 0.0  # it retrieves the target's identity
  assert result['pose_error'] == 0.0 and result['expression_error'] == 0.0
  assert result['unchanged_outside_mask'] == 1.0
  assert result['psnr'] < result['reference']['ground_truth']['psnr']
  text = synthetic.format_report(result)
  assert 'return X_t' in text and 'own held-out error: pose 1.50 deg' in text


def test_returning_the_source_scores_full_identity(pairs):
  result = synthetic.evaluate_swapper(_FakeSwapper(pairs, 'source'), pairs, _estimators())
  assert result['id_retrieval_top1'] == 1.0 and result['id_retrieval_top5'] == 1.0
  assert result['cos_source'] == pytest.approx(1.0)
  assert result['psnr'] == pytest.approx(result['reference']['source']['psnr'])
  assert result['swaps'].dtype == np.uint8 and result['swaps'].shape == pairs['source'].shape
  assert result['num_pairs'] == 6


def test_ground_truth_is_the_ceiling(pairs):
  result = synthetic.evaluate_swapper(_FakeSwapper(pairs, 'target'), pairs, _estimators())
  gt = result['reference']['ground_truth']
  assert gt['psnr'] == metrics.PSNR_CAP and gt['psnr_face'] == metrics.PSNR_CAP
  assert gt['ssim'] == pytest.approx(1.0) and gt['ssim_face'] == pytest.approx(1.0)
  # The renderer reproduces the stored ground truth, so the face region is GT's own.
  assert result['face_region']['ground_truth_rerender_match'] == 1.0
  assert 0.05 < result['face_region']['fraction_of_pixels'] < 0.6
  for answer in ('target', 'source'):
    assert result['reference'][answer]['psnr'] < 30


def test_face_region_is_the_face():
  p = _pairs(n=2, size=64)
  mask, image = synthetic.face_region(p['identity_params'], p['attribute_params'], 64,
                                      p['target_identity_params'])
  np.testing.assert_array_equal(image, p['swap'])
  # Without the target's head under the hair it is another image (2.0.0's ground truth).
  _, own_head = synthetic.face_region(p['identity_params'], p['attribute_params'], 64)
  assert not np.array_equal(own_head, p['swap'])
  assert mask.dtype == bool and mask.shape == (2, 64, 64)
  assert mask[:, 30:34, 30:34].all()  # the face centre
  assert not mask[:, :3].any() and not mask[:, :, :3].any()  # the frame border


def test_occluded_pairs_score_hear_against_aei_alone():
  """On occluded pairs a HEAR-Net swapper gets its own row and the AEI-Net-alone row, and
  every answer the PSNR inside the occluder: a copier of the target keeps a hand exactly."""
  records = synthetic_faces.occluded_pair_records(0, 'test', 32, 12, 100, 0, 6)
  decode = lambda b: np.asarray(__import__('cv2').imdecode(np.frombuffer(b, np.uint8), -1))
  pairs = {k: np.stack([decode(r[k])[..., ::-1] for _, r in records])
           for k in ('source', 'target', 'swap')}
  pairs['occluder'] = np.stack([decode(r['occluder_mask']) > synthetic.OCCLUDER_THRESHOLD
                                for _, r in records])
  for k in ('source_label', 'target_label', 'identity_params', 'attribute_params',
            'target_identity_params'):
    pairs[k] = np.stack([r[k] for _, r in records])
  assert pairs['occluder'].reshape(6, -1).any(axis=1).all()  # every target is occluded
  result = synthetic.evaluate_swapper(_FakeSwapper(pairs, 'target', refined='swap'), pairs,
                                      _estimators())
  aei = result['reference'][synthetic.AEI_ONLY]
  assert result['hear'] and result['psnr_occluder'] == metrics.PSNR_CAP  # = GT
  assert aei['psnr'] == pytest.approx(result['reference']['target']['psnr'])
  hands = pairs['attribute_params'][:, synthetic_faces.ATTRIBUTE_FIELDS.index('occluder')] == (
      synthetic_faces.OCCLUDER_HAND)
  assert hands.any()
  expected = metrics.mean_psnr(metrics.psnr(pairs['target'], pairs['swap'],
                                            mask=pairs['occluder']))
  assert aei['psnr_occluder'] == pytest.approx(expected) and expected < metrics.PSNR_CAP
  # Where a hand covers the pixel fully, X_t and the true swap agree exactly.
  occ = np.stack([decode(r['occluder_mask']) == 255 for _, r in records])[hands]
  assert np.array_equal(pairs['target'][hands][occ], pairs['swap'][hands][occ])
  text = synthetic.format_report(result)
  assert 'swap (AEI + HEAR)' in text and 'AEI-Net alone' in text and 'PSNR occl.' in text
