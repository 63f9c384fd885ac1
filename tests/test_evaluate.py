"""fsjax.eval.synthetic: identity-transfer and ground-truth metrics on known answers."""

import numpy as np

from fsjax.eval import synthetic as evaluate
from fsjax.data import synthetic_faces


def _pairs(n=6, size=32):
  rng = np.random.default_rng(0)
  ids = [synthetic_faces.sample_identity(rng) for _ in range(2 * n)]
  atts = [synthetic_faces.sample_attributes(rng) for _ in range(2 * n)]
  render = lambda i, a: synthetic_faces.render(ids[i], atts[a], size)
  return {'source': np.stack([render(2 * k, 2 * k) for k in range(n)]),
          'target': np.stack([render(2 * k + 1, 2 * k + 1) for k in range(n)]),
          'swap': np.stack([render(2 * k, 2 * k + 1) for k in range(n)])}


class _FakeSwapper:
  """Returns the target (copier) or the source (pastes the source face) as the swap."""

  image_size = 32

  def __init__(self, pairs, answer):
    self._answer = pairs[answer].astype(np.float32)

  def embed_crops(self, crops):
    return np.zeros((len(crops), 4), np.float32)

  def generate(self, crops, z_id):
    assert len(crops) == len(z_id) == len(self._answer)
    return self._answer


def _pixel_embedder(crops):
  x = crops.reshape(len(crops), -1).astype(np.float64)
  x -= x.mean(axis=1, keepdims=True)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_copying_the_target_is_diagnosed():
  pairs = _pairs()
  result = evaluate.evaluate_swapper(_FakeSwapper(pairs, 'target'), pairs,
                                     {'pixels': _pixel_embedder})
  assert result['mse']['swap'] == result['mse']['target']
  assert result['mse']['swap'] > 0
  scores = result['identity']['pixels']['swap']
  assert scores['closer_to_source'] == 0.0
  np.testing.assert_allclose(scores['cos_target'], 1.0, atol=1e-9)
  assert 'Y beats both trivial answers: False' in evaluate.format_report(result)


def test_returning_the_source_scores_full_identity_transfer():
  pairs = _pairs()
  result = evaluate.evaluate_swapper(_FakeSwapper(pairs, 'source'), pairs,
                                     {'pixels': _pixel_embedder})
  assert result['mse']['swap'] == result['mse']['source']
  assert result['identity']['pixels']['swap']['closer_to_source'] == 1.0
  assert result['swaps'].dtype == np.uint8 and result['swaps'].shape == pairs['source'].shape


def test_ground_truth_beats_trivial_answers_in_pixels():
  pairs = _pairs()
  gt = evaluate.mse(pairs['swap'], pairs['swap'])
  assert gt == 0.0
  assert evaluate.mse(pairs['target'], pairs['swap']) > 0
  assert evaluate.mse(pairs['source'], pairs['swap']) > 0
  np.testing.assert_allclose(evaluate.mse(np.zeros((1, 2, 2, 3)), np.full((1, 2, 2, 3), 255)), 1.0)
