"""HEAR-Net training (fsjax/aei/hear_train_lib.py, hear_trainer.py) on the 16 px micro
AEI-Net: the sharded step equals the one-device step, the losses are the paper's, the
heuristic error is what AEI-Net cannot reconstruct, the loop trains, resumes and picks the
hardest images."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train_helpers
from fsjax import models as models_lib
from fsjax.aei import hear_train_lib as lib
from fsjax.aei import hear_trainer
from fsjax.identity import resolve
from fsjax.models import random_weights
from fsjax.train import loop
from fsjax.train import parallel

SIZE = 16


def _hear_config(steps=2):
  from configs import hear_synthetic  # pylint: disable=g-import-not-at-top
  config = hear_synthetic.get_config()
  config.image_size = SIZE
  config.hear.channels = (4, 8)
  config.hear.num_procedural_occluders = 2
  config.hear.procedural_occluder_size = 32
  config.hear.hardest_fraction = 0.5
  config.hear.score_batch_size = 4
  config.per_device_batch_size = 1
  config.num_train_steps = steps
  config.log_every_steps = 1
  config.sample_every_steps = 0
  config.checkpoint_every_steps = 1
  config.dataset.prefetch = 1
  return config


@pytest.fixture(scope='module')
def stage1(jax_cache):
  """A random-weight micro AEI-Net and random identity encoder, as a Stage1."""
  del jax_cache
  config = train_helpers.test_config()
  found = resolve.random_encoder(config)
  generator = models_lib.build_generator(config)
  x = jnp.zeros((1, SIZE, SIZE, 3))
  z = jnp.zeros((1, config.model.id_dim))
  g_vars = random_weights.random_variables(
      jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), x, z, train=False)), 1)
  aei = lib.FrozenAEI(generator, found.module, config.identity.crop_mode, True)
  return hear_trainer.Stage1(aei, g_vars, found.variables, SIZE, '/nonexistent/aei')


def _batch(n=4, seed=0):
  rs = np.random.RandomState(seed)
  src = rs.randint(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
  tgt = rs.randint(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
  tgt[0] = src[0]
  mask = np.zeros((n, SIZE, SIZE), np.uint8)
  mask[0, 2:6, 3:9] = 1  # pasted occluders on two of the four devices' rows, none on the rest
  mask[2, 8:, :5] = 1
  return {'source': src, 'target': tgt, 'same': np.array([1, 0, 0, 0], np.float32),
          'occluder_mask': mask}


@pytest.mark.parametrize('blend,mask_channels,keep_swap',
                         [(False, (), False), (True, (), False), (True, (2, 4), False),
                          (True, (2, 4), True)],
                         ids=['paper_output', 'blend_mask', 'mask_branch', 'keep_swap'])
def test_inputs_losses_and_sharded_step(stage1, blend, mask_channels, keep_swap):
  config = _hear_config()
  # each weight counts
  config.loss.id, config.loss.chg, config.loss.rec, config.loss.occ = 0.5, 2.0, 3.0, 1.5
  config.hear.blend_mask = blend
  config.hear.mask_channels = mask_channels
  config.hear.keep_swap = keep_swap
  # Inference-only: the step trains the soft mask whatever the threshold.
  config.hear.mask_threshold = 0.5 if keep_swap else 0.0
  config.loss.mask = 0.7 if blend else 0.0
  hear = lib.build_hear(config)
  # SGD(1.0): new params = params - grad, so the two meshes compare gradients directly (Adam
  # with b1 = 0 blows float noise in ~0 gradients up to +-lr).
  tx = optax.sgd(1.0)
  mesh4 = parallel.make_mesh()
  mesh1 = parallel.make_mesh(jax.devices()[:1])
  batch = _batch()
  x_s = (batch['source'].astype(np.float32) - 127.5) / 127.5
  x_t = (batch['target'].astype(np.float32) - 127.5) / 127.5

  # The inputs: Y_hat = AEI(X_t, z(X_s)); dY_t = X_t - AEI(X_t, z(X_t)).
  y_hat, error = lib.hear_inputs(stage1.aei, stage1.generator_variables,
                                 stage1.identity_variables, x_s, x_t)
  z_t = stage1.aei.embed(stage1.identity_variables, x_t, True)
  recon = stage1.aei.swap(stage1.generator_variables, x_t, z_t)
  np.testing.assert_allclose(error, x_t - recon, atol=1e-6)
  np.testing.assert_allclose(y_hat[0], recon[0], atol=1e-6)  # same pair: z(X_s) = z(X_t)

  results = []
  for mesh in (mesh4, mesh1):
    state = parallel.replicate(lib.create_state(config, jax.random.PRNGKey(0), hear, tx), mesh)
    step = lib.make_train_step(config, mesh, hear, stage1.aei, tx, donate=False)
    new, metrics = step(state, parallel.shard_batch(batch, mesh),
                        parallel.replicate(stage1.generator_variables, mesh),
                        parallel.replicate(stage1.identity_variables, mesh))
    results.append((loop.to_host(new), loop.metrics_to_host(metrics)))
  (s4, m4), (s1, m1) = results
  p0 = jax.tree.leaves(loop.to_host(lib.create_state(config, jax.random.PRNGKey(0), hear,
                                                      tx).params))
  for a, b, p in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params), p0):
    # the same gradients up to float32 summation order (relative to the leaf's largest: with
    # L_mask some are ~10x larger than the rest)
    np.testing.assert_allclose(a, b, atol=max(2e-5, 1e-3 * float(np.max(np.abs(p - b)))),
                               rtol=1e-4)
  for k in ('loss', 'id', 'chg', 'rec', 'occ', 'mask'):
    assert m4[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6)
  assert m4['same_fraction'] == pytest.approx(0.25)

  # The losses as the paper writes them, from the state before the step.
  state0 = lib.create_state(config, jax.random.PRNGKey(0), hear, tx)
  from fsjax.models import hear_net  # pylint: disable=g-import-not-at-top
  net = lib.build_hear(config, axis_name=None)
  out, _ = net.apply({'params': state0.params, 'batch_stats': state0.batch_stats},
                     hear_net.input_of(net, y_hat, error, x_t), train=True,
                     return_mask=blend, mutable=['batch_stats'])
  y, m = out if blend else (out, None)
  if keep_swap:  # no image U-Net: AEI-Net's swap wherever the (soft, in training) m is 0
    np.testing.assert_allclose(y, m[..., None] * x_t + (1 - m[..., None]) * y_hat, atol=1e-6)
  z_s = stage1.aei.embed(stage1.identity_variables, x_s, True)
  z_y = stage1.aei.embed(stage1.identity_variables, y, True)
  want_id = np.mean(1 - np.sum(np.asarray(z_y) * np.asarray(z_s), -1))
  want_chg = np.mean(np.abs(np.asarray(y) - np.asarray(y_hat)))
  want_rec = 0.5 * np.mean((np.asarray(y[0]) - x_t[0]) ** 2)  # the one same pair
  on = batch['occluder_mask'].astype(bool)
  want_occ = np.mean(np.abs(np.asarray(y) - x_t)[on])  # over the pasted pixels only
  assert m1['id'] == pytest.approx(want_id, rel=1e-4, abs=1e-6)
  assert m1['chg'] == pytest.approx(want_chg, rel=1e-4)
  assert m1['rec'] == pytest.approx(want_rec, rel=1e-4)
  assert m1['occ'] == pytest.approx(want_occ, rel=1e-4)
  want_mask = 0.0
  if blend:  # L_mask: BCE of the blend mask against the occluder mask, over every pixel
    m = np.asarray(m, np.float64)
    want_mask = -np.mean(np.where(on, np.log(m), np.log1p(-m)))
  assert m1['mask'] == pytest.approx(want_mask, rel=1e-4, abs=1e-7)
  assert m1['loss'] == pytest.approx(
      0.5 * want_id + 2.0 * want_chg + 3.0 * want_rec + 1.5 * want_occ + 0.7 * want_mask,
      rel=1e-4)


def test_mask_config_is_a_mask_over_the_swap():
  """configs/hear_synthetic_mask.py: at its 64 px the network is the mask U-Net alone (no
  image U-Net), reading concat(dY_t, X_t), hardened at inference; trained by L_mask and L_occ
  on the pipeline's own and pasted occluder masks, without L_rec'."""
  from configs import hear_synthetic_mask  # pylint: disable=g-import-not-at-top
  config = hear_synthetic_mask.get_config()
  net = lib.build_hear(config, axis_name=None)
  x = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, net.input_channels),
                           jnp.float32)
  params = jax.eval_shape(net.init, jax.random.key(0), x)['params']
  assert params and all(k.startswith('mask_') for k in params)
  assert params['mask_down0_conv']['kernel'].shape == (4, 4, 6, config.hear.mask_channels[0])
  assert net.keep_swap and net.mask_threshold == 0.5 and config.loss.rec == 0
  assert config.loss.mask > 0 and config.loss.occ > 0 and config.dataset.own_occluder_masks


def test_loop_trains_resumes_and_uses_the_hardest(stage1, tmp_path):
  source = train_helpers.fake_source(num_identities=4, per_identity=2, size=SIZE)
  workdir = str(tmp_path / 'hear')
  config = _hear_config(steps=2)
  state = hear_trainer.train_and_evaluate(config, workdir, stage1, data_source=source)
  assert int(loop.to_host(state.step)) == 2
  with open(os.path.join(workdir, hear_trainer.HARDEST_FILE)) as f:
    import json  # pylint: disable=g-import-not-at-top
    hardest = json.load(f)
  assert len(hardest['indices']) == 4 and hardest['key']['num_records'] == 8
  # The chosen images are the ones AEI-Net reconstructs worst.
  err = lib.heuristic_error(stage1.aei)
  images = np.stack([source[i]['image'] for i in range(len(source))])
  scores = np.asarray(err(stage1.generator_variables, stage1.identity_variables, images))
  assert sorted(hardest['indices']) == sorted(np.argsort(-scores)[:4].tolist())

  variables, saved = hear_trainer.load_hear(workdir)
  assert saved['step'] == 2 and set(variables) == {'params', 'batch_stats'}
  # Resume: two more steps continue from step 2, and the parameters moved.
  config = _hear_config(steps=4)
  state = hear_trainer.train_and_evaluate(config, workdir, stage1, data_source=source)
  assert int(loop.to_host(state.step)) == 4
  later, _ = hear_trainer.load_hear(workdir)
  moved = [not np.array_equal(a, b) for a, b in
           zip(jax.tree.leaves(variables['params']), jax.tree.leaves(later['params']))]
  assert any(moved)


def test_blend_mask_run_draws_its_mask_in_the_sample_grid(stage1, tmp_path):
  """A mask-branch HEAR-Net (blend_mask + mask_channels) trains in the loop, and its sample
  grid gains a sixth column: the blend mask m, white where X_t shows through."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  source = train_helpers.fake_source(num_identities=4, per_identity=2, size=SIZE)
  workdir = str(tmp_path / 'hear')
  config = _hear_config(steps=1)
  config.hear.blend_mask, config.hear.mask_channels = True, (2, 4)
  config.loss.mask = 1.0
  config.sample_every_steps = 1
  state = hear_trainer.train_and_evaluate(config, workdir, stage1, data_source=source)
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', 'samples_00000001.png')))
  assert grid.shape[1:] == (6 * (SIZE + 2) + 2, 3) and (grid.shape[0] - 2) % (SIZE + 2) == 0
  hear = lib.build_hear(config, axis_name=None)
  out = lib.make_refine_fn(hear, stage1.aei)(
      {'params': loop.to_host(state.params), 'batch_stats': loop.to_host(state.batch_stats)},
      stage1.generator_variables, stage1.identity_variables, grid[2:2 + SIZE, 2:2 + SIZE][None],
      grid[2:2 + SIZE, SIZE + 4:2 * SIZE + 4][None])
  assert len(out) == 4 and out[3].shape == (1, SIZE, SIZE)
  drawn = grid[2:2 + SIZE, 5 * (SIZE + 2) + 2:6 * (SIZE + 2)].astype(np.float64)
  assert np.ptp(drawn, axis=-1).max() == 0  # grey levels
  np.testing.assert_allclose(drawn[..., 0] / 255.0, np.asarray(out[3][0]), atol=2 / 255)


def test_pairs_carry_the_pasted_occluders_mask():
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  config = _hear_config()
  config.dataset.same_identity_ratio = 1.0  # X_t = X_s occluded: the mask is what changed
  config.hear.occluder_mix = (0.0, 0.5, 0.5, 0.0)  # every target gets one occluder
  source = train_helpers.fake_source(num_identities=4, per_identity=2, size=SIZE)
  it = input_pipeline.create_pair_iterator(
      config, source, seed=0, process_index=0, process_count=1, batch_size=8, num_workers=0,
      occlusion=hear_trainer.make_occlusion(config))
  batch = next(it)
  mask = batch['occluder_mask']
  assert mask.shape == (8, SIZE, SIZE) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
  changed = np.any(batch['source'] != batch['target'], axis=-1)
  for m, c in zip(mask.astype(bool), changed):
    assert m.any() and c[m].mean() > 0.5  # the masked pixels are the pasted ones...
    # ...and nothing changed away from them (the cut-outs' soft edges, magnified by the
    # paste: up to ~3 px here).
    assert not c[~train_helpers.dilate(m, 3)].any()


def _occluded_faces(size=32, seed=0):
  """Four synthetic faces (glasses, hand, none, glasses) as an InMemorySource with their
  parameters, and the same faces rendered without the occluder."""
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from fsjax.data import synthetic_faces as sf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  ids = np.stack([sf.sample_identity(rng) for _ in range(4)])
  kinds = (sf.OCCLUDER_GLASSES, sf.OCCLUDER_HAND, sf.OCCLUDER_NONE, sf.OCCLUDER_GLASSES)
  atts, bare = [], []
  for kind in kinds:
    att = sf.sample_attributes(rng)
    bare.append(sf.replace_fields(att, sf.ATTRIBUTE_FIELDS, occluder=float(sf.OCCLUDER_NONE)))
    atts.append(bare[-1] if kind == sf.OCCLUDER_NONE else sf.replace_fields(
        att, sf.ATTRIBUTE_FIELDS, **sf.sample_occluder(rng, kind)))
  atts = np.stack(atts)
  source = input_pipeline.InMemorySource(
      sf.render_batch(ids, atts, size), np.arange(4),
      fields={'identity_params': ids, 'attribute_params': atts})
  return source, sf.render_batch(ids, np.stack(bare), size)


def test_own_occluder_masks_lie_on_the_records_and_join_the_pairs_mask():
  from fsjax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  source, bare = _occluded_faces()
  calls = []
  masks = input_pipeline.own_occluder_masks(source, 32, batch_size=2,
                                            progress=lambda *a: calls.append(a))
  assert masks.shape == (4, 32, 32) and masks.dtype == bool and calls == [(2, 3), (3, 3)]
  assert not masks[2].any()
  for i in (0, 1, 3):  # the mask is where the occluder changed the face, up to its edge
    changed = np.any(source[i]['image'] != bare[i], axis=-1)  # (lenses are tinted glass)
    assert masks[i].sum() > 10 and changed[masks[i]].all()
    assert not changed[~train_helpers.dilate(masks[i], 1)].any()

  config = _hear_config()
  config.image_size = 32
  config.dataset.same_identity_ratio = 1.0  # X_t = X_s: its own occluder, flipped with it
  wrapped = input_pipeline.WithOwnOccluders(source, masks)
  assert len(wrapped) == 4 and wrapped.labels.tolist() == [0, 1, 2, 3]
  it = input_pipeline.create_pair_iterator(config, wrapped, seed=0, process_index=0,
                                           process_count=1, batch_size=4, num_workers=0,
                                           num_epochs=4)
  flips = 0
  for batch in it:
    for x, mask in zip(batch['target'], batch['occluder_mask'].astype(bool)):
      i = next(k for k in range(4) if np.array_equal(x, source[k]['image']) or
               np.array_equal(x, source[k]['image'][:, ::-1]))
      flipped = not np.array_equal(x, source[i]['image'])
      flips += flipped
      np.testing.assert_array_equal(mask, masks[i][:, ::-1] if flipped else masks[i])
  assert 0 < flips < 16
  # with pasted occluders too, the mask is the union
  config.hear.occluder_mix = (0.0, 1.0, 0.0, 0.0)
  occlusion = hear_trainer.make_occlusion(config)
  plain = next(input_pipeline.create_pair_iterator(
      config, source, seed=0, process_index=0, process_count=1, batch_size=4,
      num_workers=0, occlusion=occlusion))
  both = next(input_pipeline.create_pair_iterator(
      config, wrapped, seed=0, process_index=0, process_count=1, batch_size=4,
      num_workers=0, occlusion=occlusion))
  np.testing.assert_array_equal(plain['target'], both['target'])  # the same draws
  for x, pasted, union in zip(plain['source'], plain['occluder_mask'], both['occluder_mask']):
    i = next(k for k in range(4) if np.array_equal(x, source[k]['image']) or
             np.array_equal(x, source[k]['image'][:, ::-1]))
    own = masks[i] if np.array_equal(x, source[i]['image']) else masks[i][:, ::-1]
    np.testing.assert_array_equal(union.astype(bool), pasted.astype(bool) | own)
  with pytest.raises(ValueError, match='identity_params'):
    input_pipeline.own_occluder_masks(train_helpers.fake_source(size=32), 32)
  # The trainer's switch, off in the paper's settings (as blend_mask and L_mask).
  assert isinstance(hear_trainer.with_own_occluders(config, source), type(source))
  config.dataset.own_occluder_masks = True
  on = hear_trainer.with_own_occluders(config, source)
  np.testing.assert_array_equal(on[1][input_pipeline.OWN_OCCLUDER_KEY], masks[1])
  from configs import hear_default  # pylint: disable=g-import-not-at-top
  paper = hear_default.get_config()
  assert not (paper.dataset.own_occluder_masks or paper.hear.blend_mask or paper.loss.mask)


# (hear.* / loss.* overrides, the error check_config gives)
BAD_SETTINGS = [
    ({'image_size': 32}, 'swaps 16 px'),
    ({'hear.hardest_fraction': 0.0}, 'hardest_fraction'),
    ({'hear.occluder_mix': (0.5, 0.5, 0.5, 0.5)}, 'summing to 1'),
    ({'loss.mask': 1.0}, 'needs hear.blend_mask'),
    ({'hear.mask_channels': (2, 4)}, 'mask_channels needs hear.blend_mask'),
    # 16 px is not divisible by 2**5
    ({'hear.blend_mask': True, 'hear.mask_channels': (2, 4, 4, 4, 4)}, r'divisible by 2\*\*5'),
    ({'hear.blend_mask': True, 'hear.keep_swap': True}, 'keep_swap needs hear.mask_channels'),
    ({'hear.mask_threshold': 0.5}, 'mask_threshold > 0 needs hear.blend_mask'),
    ({'hear.blend_mask': True, 'hear.mask_threshold': 1.0},
     r'mask_threshold must be in \[0, 1\)'),
]


@pytest.mark.parametrize('overrides,match', BAD_SETTINGS)
def test_bad_settings_are_refused(stage1, overrides, match):
  config = _hear_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=match):
    hear_trainer.check_config(config, stage1)


def test_cli_refuses_a_missing_aei_in_one_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'hear'
  proc = subprocess.run(
      [sys.executable, '-m', 'fsjax.main', 'train-hear', '--config', 'configs/hear_synthetic.py',
       '--workdir', str(workdir), '--aei', str(tmp_path / 'missing')],
      capture_output=True, text=True, cwd=train_helpers.REPO, timeout=300)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('fsjax train-hear: error: ')
  assert len(proc.stderr.strip().splitlines()) == 1 and not workdir.exists()


def test_export_carries_hear_and_the_swapper_applies_it(tmp_path_factory, jax_cache):
  """`fsjax export --hear`: the HEAR-Net joins the export; Swapper applies it unless
  hear=False, and hear=False is the AEI-Net alone, bit for bit."""
  del jax_cache
  import skimage.data  # pylint: disable=g-import-not-at-top
  import swap_helpers  # pylint: disable=g-import-not-at-top
  import fsjax  # pylint: disable=g-import-not-at-top
  from fsjax.swap import export  # pylint: disable=g-import-not-at-top
  from fsjax.train import checkpointing  # pylint: disable=g-import-not-at-top
  workdir, plain_export = swap_helpers.tiny_export(tmp_path_factory)
  config = _hear_config()
  config.image_size = 64
  hear_dir = str(tmp_path_factory.mktemp('hear_run'))
  hear = lib.build_hear(config, axis_name=None)
  state = jax.jit(lambda k: lib.create_state(config, k, hear, lib.make_optimizer(config)))(
      jax.random.PRNGKey(3))
  state = state.replace(batch_stats=jax.tree.map(lambda v: v + 0.1, state.batch_stats))
  ckpt = checkpointing.Checkpointer(hear_dir, subdir=hear_trainer.CHECKPOINT_SUBDIR)
  ckpt.save(7, state, None, config)
  ckpt.close()

  out = str(tmp_path_factory.getbasetemp() / 'hear_export')
  result = swap_helpers.run_cli(['export', '--workdir', workdir, '--output', out, '--hear',
                                 hear_dir], swap_helpers.cli_env(tmp_path_factory))
  assert result.returncode == 0, result.stderr
  assert 'HEAR-Net step 7' in result.stdout
  bundle = export.load_bundle(out)
  assert bundle.meta['hear']['source']['step'] == 7
  assert list(bundle.meta['hear']['channels']) == [4, 8]
  assert bundle.meta['hear']['full_res_channels'] == config.hear.full_res_channels == 16
  older = dict(bundle.meta, hear={'channels': [4, 8]})  # an export before the option
  assert export.build_hear(older).full_res_channels == 0
  np.testing.assert_array_equal(jax.tree.leaves(bundle.hear_variables['batch_stats'])[0],
                                np.asarray(jax.tree.leaves(state.batch_stats)[0]))

  with_hear = fsjax.load_swapper(out)
  plain = fsjax.load_swapper(plain_export)
  assert with_hear.has_hear and with_hear.use_hear and not plain.has_hear
  image = skimage.data.astronaut()
  refined = with_hear.swap(image, image)
  alone = with_hear.swap(image, image, hear=False)
  np.testing.assert_array_equal(alone, plain.swap(image, image))
  assert not np.array_equal(refined, alone)
  # The same refinement computed by hand from the crops: HEAR(Y_hat, X_t - AEI(X_t, z(X_t))).
  res = with_hear.swap(image, image, hear=False, return_crops=True)
  z = with_hear.identity(image)
  crop = res.target_crops
  x = crop.astype(np.float32) / 127.5 - 1
  y_hat = with_hear.generate(crop, z, hear=False) / 127.5 - 1
  recon = with_hear.generate(crop, with_hear.embed_crops(crop), hear=False) / 127.5 - 1
  from fsjax.models import hear_net  # pylint: disable=g-import-not-at-top
  want = np.asarray(bundle.hear.apply(bundle.hear_variables, hear_net.hear_input(
      jnp.asarray(y_hat), jnp.asarray(x - recon)), train=False))
  got = with_hear.generate(crop, z) / 127.5 - 1
  np.testing.assert_allclose(got, want, atol=2e-2)  # uint8 rounding of Y_hat in the hand path

  # A HEAR-Net of another size is refused in one line, nothing written.
  bad = str(tmp_path_factory.getbasetemp() / 'hear_export_bad')
  config.image_size = 32
  bad_dir = str(tmp_path_factory.mktemp('hear_run_32'))
  ckpt = checkpointing.Checkpointer(bad_dir, subdir=hear_trainer.CHECKPOINT_SUBDIR)
  ckpt.save(1, state, None, config)
  ckpt.close()
  result = swap_helpers.run_cli(['export', '--workdir', workdir, '--output', bad, '--hear',
                                 bad_dir], swap_helpers.cli_env(tmp_path_factory))
  assert result.returncode == 2 and 'refines 32 px swaps' in result.stderr
  assert not os.path.exists(bad)
