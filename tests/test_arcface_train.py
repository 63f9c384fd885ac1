"""ArcFace training: margin loss, sharded class matrix, verification metrics, loop + export."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import arcface_tiny
from fsjax.identity import train_lib as lib
from fsjax.identity import trainer as arcface_trainer
from fsjax.identity import verification
from fsjax.data import input_pipeline
from fsjax.data import synthetic_faces
from fsjax.train import checkpointing
from fsjax.train import loop
from fsjax.train import parallel


def _np_arcface_loss(emb, labels, kernel, s, m):
  """Direct numpy ArcFace (arcface_torch formula, float64)."""
  e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
  cos = e @ w
  logits = cos.copy()
  for i, y in enumerate(labels):
    c = cos[i, y]
    if c > math.cos(math.pi - m):
      logits[i, y] = math.cos(math.acos(c) + m)
    else:
      logits[i, y] = c - math.sin(math.pi - m) * m
  logits *= s
  z = logits - logits.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  return -np.mean(logp[np.arange(len(labels)), labels])


def test_margin_loss_matches_numpy():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(6, 5))
  kernel = rng.normal(size=(5, 7))
  labels = np.array([0, 3, 6, 2, 2, 5])
  # Make one target cosine very negative to take the threshold branch.
  kernel[:, 5] = -emb[5] + 0.05 * rng.normal(size=5)
  want = _np_arcface_loss(emb, labels, kernel, 64.0, 0.5)
  got, _ = lib.arcface_loss(jnp.asarray(emb, jnp.float32), jnp.asarray(labels),
                            jnp.asarray(kernel, jnp.float32), scale=64.0, margin=0.5)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  # cos(theta + m) itself, and the easy-margin branch.
  c = jnp.array([0.9, -0.2, -0.95])
  np.testing.assert_allclose(lib.arcface_target_logit(c, 0.5),
                             [math.cos(math.acos(0.9) + 0.5), math.cos(math.acos(-0.2) + 0.5),
                              -0.95 - math.sin(math.pi - 0.5) * 0.5], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(lib.arcface_target_logit(c, 0.5, easy_margin=True),
                             [math.cos(math.acos(0.9) + 0.5), -0.2, -0.95], rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize('num_classes', [12, 10])  # 10: padded to 12 over 4 devices
def test_sharded_class_matrix_matches_unsharded(num_classes):
  assert jax.device_count() == 4
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(1)
  emb = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)
  labels = jnp.asarray(rng.integers(num_classes, size=8), jnp.int32)
  padded = lib.padded_classes(num_classes, 4, True)
  kernel = jnp.asarray(rng.normal(size=(6, padded)), jnp.float32)

  def ref(e, k):
    return lib.arcface_loss(e, labels, k[:, :num_classes], scale=64.0, margin=0.5)[0]

  def sharded(e, y, k):
    loss, acc = lib.sharded_arcface_loss(e, y, k, num_classes=num_classes, scale=64.0,
                                         margin=0.5)
    return loss, acc

  fn = parallel.data_parallel(sharded, mesh, in_specs=(P('data'), P('data'), P(None, 'data')),
                              out_specs=(P(), P()))
  loss, acc = fn(emb, labels, kernel)
  want_loss, want_acc = lib.arcface_loss(emb, labels, kernel[:, :num_classes], scale=64.0,
                                         margin=0.5)
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
  np.testing.assert_allclose(float(acc), float(want_acc))

  # Gradients (embeddings and class matrix) match too.
  grad_fn = parallel.data_parallel(
      jax.grad(lambda e, y, k: sharded(e, y, k)[0], argnums=(0, 2)), mesh,
      in_specs=(P('data'), P('data'), P(None, 'data')), out_specs=(P('data'), P(None, 'data')))
  g_e, g_k = grad_fn(emb, labels, kernel)
  w_e, w_k = jax.grad(ref, argnums=(0, 1))(emb, kernel)
  np.testing.assert_allclose(np.asarray(g_e), np.asarray(w_e), atol=1e-5, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(g_k), np.asarray(w_k), atol=1e-5, rtol=1e-4)
  if padded > num_classes:
    assert np.all(np.asarray(g_k)[:, num_classes:] == 0)


def test_partial_fc_sampling_keeps_targets():
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(2)
  emb = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)
  # Two targets per device block of 10 classes: sampling 5 of 10 keeps them all.
  labels = jnp.asarray([0, 31, 10, 21, 20, 11, 30, 1], jnp.int32)
  kernel = jnp.asarray(rng.normal(size=(6, 40)), jnp.float32)

  def loss_at(rate):
    fn = parallel.data_parallel(
        lambda e, y, k: lib.sharded_arcface_loss(e, y, k, num_classes=40, scale=16.0,
                                                 margin=0.3, sample_rate=rate,
                                                 rng=jax.random.key_data(jax.random.PRNGKey(0))),
        mesh, in_specs=(P('data'), P('data'), P(None, 'data')), out_specs=(P(), P()))
    return float(fn(emb, labels, kernel)[0])

  full = loss_at(1.0)
  sampled = loss_at(0.5)
  # Fewer negatives in the softmax, same (kept) targets: the loss can only drop, and stays
  # well above the loss of the targets alone (no target was dropped).
  assert np.isfinite(sampled) and sampled <= full + 1e-5
  assert sampled < full
  assert sampled > 0.1


def test_identity_params_head_layout():
  config = arcface_tiny.get_config()  # loss.identity_params > 0, class matrix sharded
  # 44 classes: the class matrix [64, 44] has the head's shape; only it is sharded.
  setup = lib.make_setup(config, 44, 4, num_targets=44)
  shapes = jax.eval_shape(lambda k: lib.create_train_state(config, k, setup),
                          jax.random.PRNGKey(0))
  assert shapes.fc['targets_kernel'].shape == shapes.fc['kernel'].shape == (64, 44)
  assert shapes.fc['targets_bias'].shape == (44,)
  specs = lib.state_specs(shapes, setup)
  assert specs.fc == {'kernel': P(None, 'data'), 'targets_kernel': P(), 'targets_bias': P()}
  slots = [s for s in jax.tree.leaves(specs.fc_opt_state, is_leaf=lambda x: isinstance(x, P))
           if s != P()]
  assert len(slots) == 2  # Adam's mu and nu of the class matrix, not of the head
  with pytest.raises(ValueError, match='give both or neither'):
    lib.make_setup(config, 44, 4)
  config.loss.identity_params = 0.0
  with pytest.raises(ValueError, match='give both or neither'):
    lib.make_setup(config, 44, 4, num_targets=44)
  plain = lib.make_setup(config, 44, 4)
  assert set(jax.eval_shape(lambda k: lib.create_train_state(config, k, plain),
                            jax.random.PRNGKey(0)).fc) == {'kernel'}


def test_verification_metrics():
  # Perfectly separable: 5 identities, one-hot-like embeddings with small noise.
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(5), 4)
  emb = np.eye(8)[labels] + 0.01 * rng.normal(size=(20, 8))
  pairs, same = verification.make_pairs(labels, 20, seed=0)
  assert same.sum() == 20 and (~same).sum() == 20
  assert np.all((labels[pairs[:, 0]] == labels[pairs[:, 1]]) == same)
  pairs2, same2 = verification.make_pairs(labels, 20, seed=0)
  np.testing.assert_array_equal(pairs, pairs2)
  np.testing.assert_array_equal(same, same2)
  m = verification.verification_metrics(emb, pairs, same, folds=5)
  assert m['accuracy'] == 1.0 and m['best_accuracy'] == 1.0 and m['tar_at_far'] == 1.0

  # TAR@FAR on a known example: 2000 negatives 0..1999 / 2000, FAR 1e-3 -> 2 negatives may
  # pass, threshold = the 3rd highest negative (1997/2000); positives above it count.
  neg = np.arange(2000) / 2000.0
  pos = np.array([0.5, 0.9984, 0.999, 0.9986, 1.0, 0.2])
  scores = np.concatenate([pos, neg])
  is_pos = np.concatenate([np.ones(6, bool), np.zeros(2000, bool)])
  tar, thr = verification.tar_at_far(scores, is_pos, 1e-3)
  assert thr == pytest.approx(1997 / 2000)
  assert tar == pytest.approx(3 / 6)  # 0.999, 0.9986, 1.0 (strictly above)
  assert np.sum(neg > thr) <= 2
  # Best threshold on a simple case: 3 of 4 separable.
  thr, acc = verification.best_threshold(np.array([0.1, 0.2, 0.3, 0.9]), np.array([0, 1, 0, 1], bool))
  assert acc == 0.75


def _fake_faces(num_ids, per_id, seed):
  """Tiny labelled set: each identity a colour + blob position, per-image noise, and a
  synthetic_faces identity vector (the targets of loss.identity_params)."""
  rng = np.random.default_rng(seed)
  images, labels, params = [], [], []
  for i in range(num_ids):
    colour = rng.integers(40, 215, size=3)
    y, x = rng.integers(20, 92, size=2)
    identity = synthetic_faces.sample_identity(rng)
    for _ in range(per_id):
      img = np.clip(rng.normal(128, 20, size=(112, 112, 3)), 0, 255)
      img[y - 15:y + 15, x - 15:x + 15] = colour
      images.append(img.astype(np.uint8))
      labels.append(i)
      params.append(identity)
  return input_pipeline.InMemorySource(np.stack(images), np.asarray(labels),
                                       fields={'identity_params': np.stack(params)})


def test_train_resume_and_export(tmp_path, jax_cache):
  del jax_cache  # the resumed run reuses the first run's compiled step
  config = arcface_tiny.get_config()  # 'tiny' IResNet, class matrix sharded ('always')
  assert config.loss.identity_params > 0  # with the identity-parameter regression head
  config.num_train_steps = 5
  config.eval.num_pairs = 12
  config.eval.folds = 2
  config.eval.batch_size = 12
  config.eval.max_images = 0
  config.eval.flip = False
  train = _fake_faces(num_ids=10, per_id=4, seed=0)  # 10 classes: padded to 12 over 4 devices
  test = _fake_faces(num_ids=4, per_id=3, seed=1)
  workdir = str(tmp_path / 'run')

  # Steps 1-3 on 4 devices (global batch 8), then stop with a checkpoint.
  first = arcface_trainer.train_and_evaluate(config, workdir, data_source=train,
                                             eval_source=test, stop_after=3)
  assert first['step'] == 3 and first['start_step'] == 0 and first['identity_dir'] is None
  assert np.isfinite(first['train']['loss'])
  assert first['state'].fc['kernel'].sharding.spec == P(None, 'data')
  assert first['state'].fc['kernel'].shape == (64, 12)
  # The regression head is replicated beside the sharded class matrix, and it learns.
  head = first['state'].fc['targets_kernel']
  assert head.shape == (64, synthetic_faces.IDENTITY_DIM) and head.sharding.spec == P()
  assert float(np.abs(np.asarray(head)).max()) > 0  # zero-initialised, moved by the loss
  assert 0 < first['train']['target_loss'] < 10
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.all_steps() == [2, 3]
  ckpt.close()

  # Resume: continues at step 4 (state and data iterator restored), evaluates and exports.
  second = arcface_trainer.train_and_evaluate(config, workdir, data_source=train,
                                              eval_source=test)
  assert second['start_step'] == 3 and second['step'] == 5
  assert int(second['state'].step) == 5
  assert np.isfinite(second['train']['loss'])
  to_np = loop.to_host
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                       to_np(first['state'].params), to_np(second['state'].params))
  assert max(jax.tree.leaves(moved)) > 0  # steps 4-5 changed the parameters
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.latest_step() == 5
  ckpt.close()
  for key in ('accuracy', 'best_accuracy', 'tar_at_far'):
    assert 0.0 <= second['eval'][key] <= 1.0
  assert os.path.isfile(os.path.join(workdir, 'eval.json'))

  # The exported encoder loads with the public API and gives unit-norm embeddings.
  import fsjax  # pylint: disable=g-import-not-at-top
  assert second['identity_dir'] == os.path.join(workdir, 'identity')
  encode = fsjax.load_identity_encoder(second['identity_dir'])
  assert encode.meta['alignment'] == 'ffhq' and encode.meta['steps'] == 5
  # The config's stride-2 stem is recorded and rebuilt (a stride-1 IResNet would not load).
  assert encode.meta['stem_stride'] == config.model.stem_stride == 2
  assert encode.meta['arch'] == 'tiny-s2'
  faces = np.stack([test[i]['image'] for i in range(5)])
  emb = np.asarray(encode(faces))
  assert emb.shape == (5, 64)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  # Same weights as the trained state: the encoder reproduces the trainer's embeddings.
  embed = lib.make_embed_fn(config, flip=False)
  want = embed({'params': to_np(second['state'].params),
                'batch_stats': to_np(second['state'].batch_stats)}, faces)
  np.testing.assert_allclose(emb, np.asarray(want), atol=1e-5)
