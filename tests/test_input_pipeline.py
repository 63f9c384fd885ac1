"""Tests for fsjax/input_pipeline.py on an in-memory fake source (and one tiny TFDS dataset).

The fake records are 16x16 random images whose record index is written in the red channel of
both top corners (so it survives a horizontal flip) and whose label is index // 5 (40
identities of 5 images), so a batch can be traced back to the records it came from.
"""

import dataclasses

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import tiny
from fsjax.data import input_pipeline

N, S, PER_ID = 200, 16, 5


def _images(n=N):
  images = np.random.default_rng(123).integers(0, 256, (n, S, S, 3), dtype=np.uint8)
  images[:, 0, 0, 0] = np.arange(n)
  images[:, 0, -1, 0] = np.arange(n)
  return images


def _labels(n=N):
  return np.arange(n) // PER_ID


@pytest.fixture(name='source')
def _source():
  return input_pipeline.InMemorySource(_images(), _labels())


def _config(**dataset):
  config = tiny.get_config()
  config.image_size = S
  config.per_device_batch_size = 2  # B_local = 8 on the 4 fake devices
  config.dataset.num_workers = 0
  config.dataset.color_jitter = 0.0
  config.dataset.update(dataset)
  return config


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _index(images):
  """Record indices of a batch of images (no jitter): [B]."""
  return images[:, 0, 0, 0].astype(np.int64)


def test_batch_layout(source):
  it = input_pipeline.create_pair_iterator(_config(), source, seed=0)
  batch = next(it)
  assert set(batch) == {'source', 'target', 'same'}
  assert batch['source'].shape == (8, S, S, 3) and batch['source'].dtype == np.uint8
  assert batch['target'].shape == (8, S, S, 3) and batch['target'].dtype == np.uint8
  assert batch['same'].shape == (8,) and batch['same'].dtype == np.float32
  assert set(np.unique(batch['same'])) <= {0.0, 1.0}


def test_same_seed_same_batches(source):
  config = _config(color_jitter=0.2)
  a = _take(input_pipeline.create_pair_iterator(config, source, seed=7), 5)
  b = _take(input_pipeline.create_pair_iterator(config, source, seed=7), 5)
  _assert_same_batches(a, b)
  c = _take(input_pipeline.create_pair_iterator(config, source, seed=8), 5)
  assert not all(np.array_equal(x['source'], y['source']) for x, y in zip(a, c))


def test_restore_state_gives_the_next_batches(source):
  config = _config(color_jitter=0.2)
  it = input_pipeline.create_pair_iterator(config, source, seed=3)
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  fresh = input_pipeline.create_pair_iterator(config, source, seed=3)
  fresh.set_state(state)
  _assert_same_batches(_take(fresh, 4), expected)


def test_restore_through_orbax_checkpoint_manager(source, tmp_path):
  config = _config()
  it = input_pipeline.create_pair_iterator(config, source, seed=5)
  _take(it, 2)
  options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True)
  with ocp.CheckpointManager(tmp_path / 'ckpt', options=options) as mngr:
    mngr.save(2, args=ocp.args.Composite(
        state=ocp.args.StandardSave({'w': np.arange(3.0)}),
        data_iter=input_pipeline.checkpoint_save_args(it)))
    # The state was captured by save(): advancing now must not change the checkpoint.
    expected = _take(it, 3)
    mngr.wait_until_finished()
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    assert mngr.latest_step() == 2
    fresh = input_pipeline.create_pair_iterator(config, source, seed=5)
    restored = mngr.restore(2, args=ocp.args.Composite(
        state=ocp.args.StandardRestore({'w': np.zeros(3)}),
        data_iter=input_pipeline.checkpoint_restore_args(fresh)))
  np.testing.assert_array_equal(restored['state']['w'], np.arange(3.0))
  assert restored['data_iter'] is fresh
  _assert_same_batches(_take(fresh, 3), expected)


def test_same_identity_fraction_and_labels(source):
  labels = _labels()
  config = _config(same_identity_ratio=0.2)
  it = input_pipeline.create_pair_iterator(config, source, seed=11)
  same, i_s, i_t = [], [], []
  for batch in _take(it, 250):  # 2000 pairs
    same.append(batch['same'])
    i_s.append(_index(batch['source']))
    i_t.append(_index(batch['target']))
  same, i_s, i_t = map(np.concatenate, (same, i_s, i_t))
  assert same.size == 2000
  assert abs(same.mean() - 0.2) < 0.05, same.mean()
  is_same = same == 1.0
  # Same-identity pairs share the label (and with 5 images per identity, use another one).
  np.testing.assert_array_equal(labels[i_s[is_same]], labels[i_t[is_same]])
  assert (i_s[is_same] != i_t[is_same]).all()
  # Other pairs have different labels.
  assert (labels[i_s[~is_same]] != labels[i_t[~is_same]]).all()


def test_same_target_self_and_unlabelled_sources():
  images = _images()
  for config, source in (
      (_config(same_target='self'), input_pipeline.InMemorySource(images, _labels())),
      (_config(), input_pipeline.InMemorySource(images)),  # labels unknown (-1)
  ):
    batches = _take(input_pipeline.create_pair_iterator(config, source, seed=2), 60)
    n_same = 0
    for batch in batches:
      for x_s, x_t, same in zip(batch['source'], batch['target'], batch['same']):
        if same:  # the target is the source record itself: identical pixels
          n_same += 1
          np.testing.assert_array_equal(x_s, x_t)
        else:
          assert x_s[0, 0, 0] != x_t[0, 0, 0]
    assert 0.1 < n_same / 480 < 0.3


def test_flip_is_applied_per_image(source):
  images = _images()
  batches = _take(input_pipeline.create_pair_iterator(_config(flip=True), source, seed=1), 10)
  flipped = plain = 0
  for batch in batches:
    for x in np.concatenate([batch['source'], batch['target']]):
      record = images[x[0, 0, 0]]
      if np.array_equal(x, record):
        plain += 1
      else:
        np.testing.assert_array_equal(x, record[:, ::-1])
        flipped += 1
  assert flipped > 40 and plain > 40
  off = _take(input_pipeline.create_pair_iterator(_config(flip=False), source, seed=1), 3)
  for batch in off:
    np.testing.assert_array_equal(batch['source'], images[_index(batch['source'])])


def test_color_jitter_changes_pixels_deterministically(source):
  images = _images()
  batch = next(input_pipeline.create_pair_iterator(
      _config(flip=False, color_jitter=0.4), source, seed=1))
  assert batch['source'].dtype == np.uint8
  # The index pixel may move under jitter, so compare with the un-jittered batch.
  plain = next(input_pipeline.create_pair_iterator(
      _config(flip=False, color_jitter=0.0), source, seed=1))
  idx = _index(plain['source'])
  diff = np.abs(batch['source'].astype(int) - images[idx].astype(int)).mean(axis=(1, 2, 3))
  assert (diff > 1.0).all(), diff


def test_host_shards_disjoint_and_covering(source):
  config = _config(flip=False)
  seen = []
  for host in (0, 1):
    it = input_pipeline.create_pair_iterator(config, source, seed=4, process_index=host,
                                             process_count=2, num_epochs=1)
    seen.append(np.concatenate([_index(b['source']) for b in it]))
  assert len(seen[0]) == len(seen[1]) == N // 2
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(N))
  # Each host's shard is shuffled (not in index order).
  assert not np.array_equal(seen[0], np.sort(seen[0]))


def test_reshuffled_each_epoch(source):
  it = input_pipeline.create_pair_iterator(_config(flip=False), source, seed=4, num_epochs=2,
                                           process_index=0, process_count=1)
  order = np.concatenate([_index(b['source']) for b in it])
  assert len(order) == 2 * N
  first, second = order[:N], order[N:]
  assert set(first) == set(second) == set(range(N))
  assert not np.array_equal(first, second)


def test_workers_give_the_same_batches(source):
  config = _config(color_jitter=0.2)
  expected = _take(input_pipeline.create_pair_iterator(config, source, seed=9), 4)
  it = input_pipeline.create_pair_iterator(config, source, seed=9, num_workers=2)
  try:
    got = _take(it, 2)
    state = it.get_state()
    got += _take(it, 2)
  finally:
    it.close()
  _assert_same_batches(got, expected)
  # A multi-worker state restores into a new multi-worker iterator.
  fresh = input_pipeline.create_pair_iterator(config, source, seed=9, num_workers=2)
  try:
    fresh.set_state(state)
    _assert_same_batches(_take(fresh, 2), expected[2:])
  finally:
    fresh.close()


def test_identity_iterator(source):
  labels = _labels()
  config = _config()
  it = input_pipeline.create_identity_iterator(config, source, seed=0)
  batches = _take(it, 4)
  for batch in batches:
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (8, S, S, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
    np.testing.assert_array_equal(batch['label'], labels[_index(batch['image'])])
  again = input_pipeline.create_identity_iterator(config, source, seed=0)
  again.set_state({'next_index': 2})
  _assert_same_batches(_take(again, 2), batches[2:])
  with pytest.raises(ValueError, match='no identity label'):
    input_pipeline.create_identity_iterator(config, input_pipeline.InMemorySource(_images()),
                                            seed=0)


def test_identity_iterator_targets():
  # Regression targets (ArcFace's loss.identity_params): the same images and labels as without
  # them, each record's vector standardised, its mirrored entries negated on flipped images.
  values = np.random.default_rng(5).normal(size=(N, 3)).astype(np.float32)
  src = input_pipeline.InMemorySource(_images(), _labels(), fields={'params': values})
  f32 = lambda *v: np.array(v, np.float32)
  targets = input_pipeline.IdentityTargets('params', mean=f32(1, 0, 0), scale=f32(2, 1, 4),
                                           mirror_sign=f32(1, -1, 1))
  config = _config()
  plain = _take(input_pipeline.create_identity_iterator(config, src, seed=0), 3)
  taught = _take(input_pipeline.create_identity_iterator(config, src, seed=0, targets=targets), 3)
  images, flips = _images(), []
  for a, b in zip(plain, taught):
    assert set(b) == {'image', 'label', 'targets'}
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
    idx = _index(b['image'])
    flipped = np.array([not np.array_equal(img, images[i]) for img, i in zip(b['image'], idx)])
    for img, i, f in zip(b['image'], idx, flipped):
      np.testing.assert_array_equal(img, images[i][:, ::-1] if f else images[i])
    sign = np.where(flipped[:, None], targets.mirror_sign, 1.0)
    np.testing.assert_allclose(b['targets'], (values[idx] * sign - targets.mean) / targets.scale,
                               rtol=1e-6)
    assert b['targets'].dtype == np.float32
    flips.extend(flipped)
  assert 0 < sum(flips) < len(flips)
  missing = dataclasses.replace(targets, key='identity_params')
  with pytest.raises(ValueError, match="no 'identity_params'"):
    input_pipeline.create_identity_iterator(config, src, seed=0, targets=missing)


def test_image_size_mismatch_is_an_error(source):
  config = _config()
  config.image_size = 64
  with pytest.raises(ValueError, match='config.image_size'):
    input_pipeline.create_pair_iterator(config, source, seed=0)


def test_png_source_and_measure_pipeline():
  png = input_pipeline.InMemorySource(_images(40), _labels(40), encode_png=True)
  np.testing.assert_array_equal(png[7]['image'], _images(40)[7])
  rate = input_pipeline.measure_pipeline(_config(), png, num_batches=3, warmup_batches=1)
  assert rate > 0


def test_tfds_data_source(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')

  class FsjaxPipelineTestFaces(tfds.core.GeneratorBasedBuilder):
    """12 random 16x16 faces of 4 identities."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(S, S, 3)),
          'label': tfds.features.Scalar(np.int64),
      }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      images = _images(12)
      for i in range(12):
        yield i, {'image': images[i], 'label': i // 3}

  FsjaxPipelineTestFaces(data_dir=str(tmp_path)).download_and_prepare(
      file_format='array_record')
  cfg = _config().dataset
  cfg.name = 'fsjax_pipeline_test_faces'
  cfg.data_dir = str(tmp_path)
  source = input_pipeline.create_data_source(cfg, 'train')
  assert len(source) == 12
  # TFDS stores the records in its own (hashed) order; the index pixel says which is which.
  stored = np.array([source[k]['image'][0, 0, 0] for k in range(12)])
  assert sorted(stored) == list(range(12))
  np.testing.assert_array_equal(source[5]['image'], _images(12)[stored[5]])
  np.testing.assert_array_equal(input_pipeline.read_labels(source), stored // 3)
  it = input_pipeline.create_pair_iterator(_config(), source, seed=0, batch_size=4)
  batch = next(it)
  idx_s, idx_t = _index(batch['source']), _index(batch['target'])
  np.testing.assert_array_equal(batch['same'], (idx_s // 3 == idx_t // 3).astype(np.float32))
  cfg.data_dir = str(tmp_path / 'empty')
  with pytest.raises(FileNotFoundError, match='fsjax build fsjax_pipeline_test_faces'):
    input_pipeline.create_data_source(cfg, 'train')
