"""GHOST (ai-forever/sber-swap) AEI-Net weights: layout, conversion, parity, refusals, alignment,
`fsjax convert-generator` (export, swap, CLI refusals) and fine-tuning from it (init_from).

The PyTorch twin of GHOST's layout is fsjax/bench/torch_reference/ghost.py; parity runs at
tiny widths with GHOST's full depth (7 encoder levels, 8 AAD ResBlks, 256 px), so the
state dicts have exactly the keys of the released files. The fine-tuning test uses a 16 px
GHOST-layout model (the micro training config of tests/train_helpers.py).
"""

import collections
import json
import os
import re
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import torch

import fsjax
import swap_helpers
import train_helpers
from configs import default as default_config
from configs import ghost_finetune
from fsjax import models
from fsjax.aei import convert
from fsjax.aei import init_from
from fsjax.aei import trainer
from fsjax.bench.torch_reference import ghost
from fsjax.faces import align as align_lib
from fsjax.identity import checkpoint as identity_checkpoint
from fsjax.swap import export
from fsjax.swap import ghost as ghost_swap
from fsjax.bench.torch_reference import convert as torch_convert

TOL = 1e-4  # max |flax - torch| <= TOL * max(1, max |torch|), float32
ATTR_T = (2, 4, 4, 8, 8, 8, 8)  # tiny widths, GHOST's depth (7 levels)
GEN_T = (16, 16, 16, 16, 12, 8, 6, 4)  # same cin == cout pattern as GHOST (blocks 1-3)
ID_T = 32


@pytest.fixture(autouse=True, scope='module')
def _fast_compiles():
  """Compile without most XLA optimisations (compile time dominates on the CPU)."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def _nparams(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


_randomize_bn = torch_convert.randomize_batch_norm


def _tiny_generator(num_blocks, seed=0):
  """Tiny GHOST generator, PyTorch default init (O(1) AAD modulations), random BN stats."""
  torch.manual_seed(seed)
  return _randomize_bn(ghost.AEI_Net(num_blocks, ID_T, ATTR_T, GEN_T), seed).eval()


def _nhwc(t):
  a = t.detach().numpy()
  return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def _assert_close(got, ref, what):
  got = np.asarray(got, np.float32)
  assert got.shape == ref.shape, (what, got.shape, ref.shape)
  err = float(np.max(np.abs(got - ref)))
  scale = max(1.0, float(np.max(np.abs(ref))))
  assert err <= TOL * scale, f'{what}: max abs err {err:.3g} (scale {scale:.3g})'
  return err


def _shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


# ---------------------------------------------------------------------------------------
# Layout and parameter counts (abstract evaluation only).

COUNTS = {1: 128_469_133, 2: 184_343_381, 3: 240_217_629}  # G+E at 256 px, 512-d z_id


@pytest.mark.parametrize('num_blocks', [1, 2, 3])
def test_param_counts_and_keys(num_blocks):
  """fsjax (config.model.aad_num_blocks) == the PyTorch GHOST reference, and GHOST's keys.

  2 blocks is the paper / taotaonice ResBlk (184,343,381); each block more or fewer changes
  the generator by 55,874,248 parameters (the encoder stays 67,087,744).
  """
  cfg = default_config.get_config()
  cfg.model.aad_num_blocks = num_blocks
  g = models.build_generator(cfg)
  v = jax.eval_shape(g.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)),
                     jnp.zeros((1, 512)))
  with torch.device('meta'):
    ref = ghost.AEI_Net(num_blocks)
  assert _nparams(v['params']) == ghost.count_params(ref) == COUNTS[num_blocks]
  assert _nparams(v['params']['encoder']) == ghost.count_params(ref.encoder) == 67_087_744

  sd = {k: tuple(t.shape) for k, t in ref.state_dict().items()
        if not k.endswith('num_batches_tracked')}
  layout = convert.GeneratorLayout(num_blocks, ghost.ATTR_CHANNELS, ghost.GEN_CHANNELS, 512)
  assert convert.expected_generator_shapes(layout) == sd
  assert sd['encoder.deconv1.deconv.weight'] == (1024, 1024, 4, 4)
  assert sd['generator.up1.weight'] == (512, 1024, 2, 2)
  assert sd['generator.AADBlk1.add_blocks.0.conv1.weight'] == (1024, 1024, 1, 1)
  assert sd[f'generator.AADBlk8.add_blocks.{3 * num_blocks - 1}.weight'] == (3, 64, 3, 3)
  assert sd['generator.AADBlk8.last_add_block.2.weight'] == (3, 64, 3, 3)
  assert 'generator.AADBlk3.last_add_block.0.fc1.weight' not in sd  # 1024 -> 1024
  # The converted tree is fsjax's tree (names and shapes), at full size.
  expected = convert._generator_table(layout)[0]  # pylint: disable=protected-access
  for key, _, collection, path, kind in expected:
    leaf = v[collection]
    for name in path:
      leaf = leaf[name]
    shape = sd[key]
    want = {'conv': shape[2:] + shape[1::-1], 'convt': shape[2:] + shape[1::-1],
            'linear': shape[::-1], 'vector': shape}[kind]
    assert tuple(leaf.shape) == want, key
  assert len(expected) == len(jax.tree.leaves(v))
  # Tiny widths keep the key structure.
  assert set(_tiny_generator(num_blocks).state_dict()) == set(ref.state_dict())


def test_discriminator_counts_and_keys():
  """GHOST's D (n_layers 5, InstanceNorm, 3 scales, ndf 64): fsjax == torch, 33,463,107."""
  with torch.device('meta'):
    ref = ghost.MultiscaleDiscriminator()
  sd = {k: tuple(t.shape) for k, t in ref.state_dict().items()}
  layout = convert.DiscriminatorLayout(num_d=3, n_layers=5, ndf=64, max_channels=512)
  assert convert.expected_discriminator_shapes(layout) == sd
  assert sd['layer0.17.weight'] == (1, 512, 4, 4) and 'layer0.3.weight' not in sd
  d = convert.build_discriminator(layout)
  v = jax.eval_shape(d.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  assert _nparams(v['params']) == ghost.count_params(ref) == 33_463_107
  cfg = default_config.get_config()
  cfg.discriminator.update(layout.discriminator_fields())
  assert models.build_discriminator(cfg) == d


# ---------------------------------------------------------------------------------------
# Parity (tiny widths, 256 px, eval mode).


@pytest.mark.parametrize('num_blocks', [1, 2, 3])
def test_generator_parity(num_blocks):
  """Converted fsjax AEINet == the PyTorch GHOST reference: y and every z_att level."""
  t_model = _tiny_generator(num_blocks, seed=num_blocks)
  sd = t_model.state_dict()
  layout = convert.detect_layout(sd)
  assert layout == convert.GeneratorLayout(num_blocks, ATTR_T, GEN_T, ID_T, 'unet')
  variables = convert.generator_to_flax(sd)
  f_model = convert.build_generator(layout)
  rs = np.random.RandomState(num_blocks)
  x = rs.uniform(-1, 1, (2, 256, 256, 3)).astype(np.float32)
  # Unnormalised, as GHOST feeds it (raw ArcFace embeddings: entries of order 1). Larger z
  # makes this random net ill-conditioned: torch fp32 itself then drifts ~1e-4 from fp64.
  z = rs.randn(2, ID_T).astype(np.float32)
  abstract = jax.eval_shape(f_model.init, jax.random.key(0), x, z)
  assert _shapes(variables) == _shapes(dict(abstract))
  y, z_att = jax.jit(lambda v, a, b: f_model.apply(v, a, b, False))(variables, x, z)
  with torch.no_grad():
    t_y, t_att = t_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(z))
  ref = _nhwc(t_y)
  # The outputs are informative: neither constant nor saturated by tanh.
  assert ref.std() > 0.1 and np.mean(np.abs(ref) > 0.99) < 0.5
  err = _assert_close(y, ref, f'y ({num_blocks} blocks)')
  print(f'{num_blocks} blocks: worst |y_flax - y_torch| = {err:.3g}')
  assert len(z_att) == len(t_att) == 8
  for k, (a, b) in enumerate(zip(z_att, t_att)):
    _assert_close(a, _nhwc(b), f'z_att[{k}] ({num_blocks} blocks)')
  if num_blocks == 2:  # the helper the CLI runs
    assert ghost.verify(sd, variables, batch=1) < TOL
  # Built from a config (config.model.aad_num_blocks), with merged attribute convs.
  cfg = default_config.get_config()
  cfg.model.update(layout.model_fields())
  cfg.model.aad_merge_attr_convs = True
  merged = models.build_generator(cfg)
  y_m, _ = jax.jit(lambda v, a, b: merged.apply(v, a, b, False))(variables, x, z)
  _assert_close(y_m, ref, f'y (merged attribute convs, {num_blocks} blocks)')


@pytest.mark.parametrize('norm', ['instance', 'batch'])
def test_discriminator_parity(norm):
  """Converted fsjax MultiscaleDiscriminator == pix2pixHD's (GHOST: instance), every scale."""
  torch.manual_seed(5)
  t_model = _randomize_bn(ghost.MultiscaleDiscriminator(ndf=4, n_layers=5, max_channels=16,
                                                        norm=norm)).eval()
  sd = t_model.state_dict()
  layout = convert.detect_discriminator_layout(sd)
  assert layout == convert.DiscriminatorLayout(3, 5, 4, 16, norm)
  variables = convert.discriminator_to_flax(sd)
  assert bool(variables['batch_stats']) == (norm == 'batch')
  f_model = convert.build_discriminator(layout)
  x = np.random.RandomState(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  abstract = jax.eval_shape(f_model.init, jax.random.key(0), x)
  assert _shapes({k: v for k, v in variables.items() if v}) == _shapes(dict(abstract))
  out = jax.jit(lambda v, a: f_model.apply(v, a, False))(
      {k: v for k, v in variables.items() if v}, x)
  with torch.no_grad():
    ref = t_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  assert len(out) == len(ref) == 3
  errs = [_assert_close(a, _nhwc(b), f'D scale {k} ({norm})') for k, (a, b) in
          enumerate(zip(out, ref))]
  print(f'D ({norm}): worst |flax - torch| per scale', [f'{e:.2g}' for e in errs])
  # pix2pixHD scores the full resolution with layer2: swapping scales must show.
  assert out[0].shape != out[2].shape


# ---------------------------------------------------------------------------------------
# Refusals and files.


@pytest.fixture(scope='module')
def tiny_sd():
  return {k: v.clone() for k, v in _tiny_generator(2).state_dict().items()}


def _error(fn, *args):
  with pytest.raises(convert.ConversionError) as e:
    fn(*args)
  message = str(e.value)
  assert '\n' not in message and isinstance(e.value, ValueError)
  return message


def test_refuses_wrong_keys_shapes_and_kinds(tiny_sd):
  """Missing, unexpected, mis-shaped and non-finite keys are named; D as G is recognised."""
  sd = dict(tiny_sd)
  del sd['generator.AADBlk5.last_add_block.0.fc2.bias']
  assert "'generator.AADBlk5.last_add_block.0.fc2.bias'" in _error(convert.generator_to_flax, sd)
  assert 'missing' in _error(convert.generator_to_flax, sd)

  sd = dict(tiny_sd, **{'generator.AADBlk2.extra.weight': torch.zeros(3)})
  msg = _error(convert.generator_to_flax, sd)
  assert 'unexpected' in msg and "'generator.AADBlk2.extra.weight'" in msg
  sd = dict(tiny_sd, **{'head.weight': torch.zeros(3)})
  assert "'head.weight'" in _error(convert.generator_to_flax, sd)

  sd = dict(tiny_sd)
  sd['generator.AADBlk3.add_blocks.3.conv2.weight'] = torch.zeros(16, 8, 1, 1)
  msg = _error(convert.generator_to_flax, sd)
  assert 'shape' in msg and "'generator.AADBlk3.add_blocks.3.conv2.weight'" in msg
  # A 3-block unit in one ResBlk of a 2-block model: unexpected, named.
  sd = dict(tiny_sd)
  sd['generator.AADBlk4.add_blocks.8.weight'] = torch.zeros(12, 16, 3, 3)
  assert "'generator.AADBlk4.add_blocks.8.weight'" in _error(convert.generator_to_flax, sd)

  sd = dict(tiny_sd)
  sd['encoder.conv3.1.running_var'] = torch.full((4,), float('nan'))
  assert "'encoder.conv3.1.running_var'" in _error(convert.generator_to_flax, sd)

  d_sd = ghost.MultiscaleDiscriminator(ndf=4, n_layers=5, max_channels=16).state_dict()
  for fn in (convert.generator_to_flax, convert.detect_layout, ghost.verify):
    msg = _error(fn, d_sd)
    assert 'discriminator' in msg and 'G_unet' in msg
  assert 'generator' in _error(convert.discriminator_to_flax, tiny_sd)
  assert "'x'" in _error(convert.generator_to_flax, {'x': np.zeros(3)})


def test_load_state_dict_file(tmp_path, tiny_sd):
  """Bare, {'state_dict': ...}-wrapped and DataParallel files load to the same arrays."""
  want = convert.generator_to_flax(tiny_sd)
  wrapped = collections.OrderedDict(('module.' + k, v) for k, v in tiny_sd.items())
  for i, obj in enumerate([tiny_sd, {'state_dict': tiny_sd, 'epoch': 3}, wrapped]):
    path = str(tmp_path / f'g{i}.pth')
    torch.save(obj, path)
    sd = convert.load_state_dict_file(path)
    assert set(sd) == set(tiny_sd)
    got = convert.generator_to_flax(sd)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  torch.save({'a.weight': torch.zeros(2), 'b': 'text'}, str(tmp_path / 'bad.pth'))
  assert "'b'" in _error(convert.load_state_dict_file, str(tmp_path / 'bad.pth'))
  torch.save([torch.zeros(2)], str(tmp_path / 'list.pth'))
  assert 'state dict' in _error(convert.load_state_dict_file, str(tmp_path / 'list.pth'))
  (tmp_path / 'junk.pth').write_bytes(b'not a torch file')
  _error(convert.load_state_dict_file, str(tmp_path / 'junk.pth'))


class _Payload:
  """Pickles as a call of os.system: what a malicious .pth would run when unpickled."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_pickled_code_is_never_run(tmp_path, tiny_sd):
  """A .pth whose unpickling would run a shell command is refused without running it."""
  marker = tmp_path / 'MARKER'
  path = str(tmp_path / 'G_evil.pth')
  torch.save(dict(tiny_sd, **{'encoder.conv1.0.weight': _Payload(marker)}), path)
  assert not marker.exists()
  msg = _error(convert.load_state_dict_file, path)
  assert 'weights-only' in msg
  assert not marker.exists()
  # The file really is malicious: a full unpickle runs the command.
  torch.load(path, weights_only=False)
  assert marker.exists()


# ---------------------------------------------------------------------------------------
# GHOST preprocessing alignment.


def test_ghost224_alignment():
  """The 5 points land on the 112 template x 2 in the 224 crop (and on its cv2.resize image
  at 256); the crop is cv2.warpAffine's with a black border, the 256 one its cv2.resize."""
  assert 'ghost224' in align_lib.ALIGN_MODES
  np.testing.assert_allclose(align_lib.ghost_template(224), align_lib.ARCFACE_TEMPLATE_112 * 2,
                             atol=1e-5)
  rs = np.random.RandomState(0)
  image = rs.randint(0, 256, (300, 360, 3)).astype(np.uint8)
  angle, scale = np.deg2rad(17.0), 1.3
  rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  lm5 = (align_lib.ARCFACE_TEMPLATE_112 * 2 - 112) @ rot.T + [40.0, 60.0]  # near a corner
  face = collections.namedtuple('Face', 'landmarks5')(lm5)

  crop, m = align_lib.align_face(image, face, 'ghost224', 224)
  assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
  np.testing.assert_allclose(align_lib.transform_points(m, lm5), align_lib.ghost_template(224),
                             atol=1e-3)
  m64 = align_lib.similarity_transform(lm5, align_lib.ghost_template(224))  # as insightface's
  np.testing.assert_allclose(m, m64, rtol=1e-6, atol=1e-5)
  ref = cv2.warpAffine(image, m64, (224, 224), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  np.testing.assert_array_equal(crop, ref)
  assert (crop[:10, :10] == 0).all()  # outside the photo: black (borderValue 0)

  crop256, m256 = align_lib.align_face(image, face, 'ghost224', 256)
  np.testing.assert_array_equal(crop256, cv2.resize(crop, (256, 256),
                                                    interpolation=cv2.INTER_LINEAR))
  np.testing.assert_allclose(align_lib.transform_points(m256, lm5),
                             align_lib.ghost_template(256), atol=1e-3)
  # The same geometry: a 224 crop pixel p is the 256 crop's (p + 0.5) * 256 / 224 - 0.5.
  p = np.array([[0.0, 0.0], [223.0, 100.0]])
  src = align_lib.transform_points(align_lib.invert_affine(m), p)
  np.testing.assert_allclose(align_lib.transform_points(m256, src), (p + 0.5) * 256 / 224 - 0.5,
                             atol=1e-3)


# ---------------------------------------------------------------------------------------
# `fsjax convert-generator`: release-like files -> export -> Swapper; refusals; fine-tuning.

MICRO_ATTR, MICRO_GEN = (4, 8, 16), (16, 16, 8, 8)  # tests/train_helpers.py MICRO (16 px)


@pytest.fixture(scope='module')
def ghost_files(tmp_path_factory):
  """GHOST's release files with random weights (swap_helpers.tiny_ghost_files: G 256 px at
  tiny widths, D, backbone), plus a 16 px G + 1-scale D matching the micro training config."""
  d = tmp_path_factory.mktemp('ghost_files')
  files, modules = swap_helpers.tiny_ghost_files(str(d))
  micro = {'G_micro': _randomize_bn(ghost.AEI_Net(2, 64, MICRO_ATTR, MICRO_GEN), 12).eval(),
           'D_micro': ghost.MultiscaleDiscriminator(ndf=8, n_layers=2, num_D=1, max_channels=64)}
  for name, model in micro.items():
    files[name] = str(d / f'{name}.pth')
    torch.save(model.state_dict(), files[name])
  return {'files': files, 'models': dict(modules, **micro)}


def _cli(args, tmp_path_factory):
  return swap_helpers.run_cli(['convert-generator'] + list(args),
                              swap_helpers.cli_env(tmp_path_factory))


def test_convert_generator_round_trip_follows_ghost_preprocessing(ghost_files, tmp_path,
                                                                  tmp_path_factory):
  """CLI -> export -> load_swapper -> swap of the astronaut, and the swap equals GHOST's
  inference path run in PyTorch: 224 crop, identity from it at 112 (align_corners) raw,
  G on its 256 resize."""
  files, ref = ghost_files['files'], ghost_files['models']
  out = tmp_path / 'ghost_export'
  run = _cli([files['G'], str(out), '--identity', files['backbone'], '--discriminator',
              files['D']], tmp_path_factory)
  assert run.returncode == 0, run.stderr[-3000:]
  worst = float(re.search(r'worst \|y_fsjax - y_torch\| = (\S+)', run.stdout).group(1))
  print(f'convert-generator verification (tiny 2-block, 256 px): worst diff {worst:.3g}')
  assert worst <= TOL

  meta = json.loads((out / 'swapper.json').read_text())
  assert (meta['alignment'], meta['identity_crop_mode'], meta['image_size']) == (
      'ghost224', 'resize', 256)
  assert meta['model']['id_normalize'] is False and meta['model']['aad_num_blocks'] == 2
  assert set(meta['model']) == set(default_config.get_config().model.keys())  # all of config.model
  assert meta['discriminator'] == {'num_d': 3, 'n_layers': 5, 'ndf': 4, 'max_channels': 16,
                                   'norm': 'instance'}
  assert meta['source']['verification']['max_abs_diff'] == pytest.approx(worst, rel=1e-2)
  # D is the training side: inference never reads it; init_from does.
  fields, d_vars = export.load_discriminator(str(out))
  assert fields == meta['discriminator']
  want = {k: v for k, v in convert.discriminator_to_flax(ref['D'].state_dict()).items() if v}
  jax.tree.map(np.testing.assert_array_equal, d_vars, want)

  swapper = fsjax.load_swapper(str(out))
  assert (swapper.identity_size, swapper.id_normalize) == (224, False)
  astronaut = skimage.data.astronaut()
  result = swapper.swap(astronaut, astronaut, return_crops=True)
  changed = np.any(result.image != astronaut, axis=-1)
  assert changed.any() and not changed[result.mask == 0].any()

  # GHOST's path in PyTorch on the same detected face.
  lm5 = result.faces[0].landmarks5
  crop224, _ = align_lib.align_face(astronaut, result.faces[0], 'ghost224', 224)
  np.testing.assert_array_equal(result.target_crops[0],
                                cv2.resize(crop224, (256, 256), interpolation=cv2.INTER_LINEAR))
  np.testing.assert_array_equal(crop224, align_lib.align_ghost(astronaut, lm5, 224)[0])
  to_t = lambda a: torch.from_numpy(a.astype(np.float32)[None].transpose(0, 3, 1, 2) / 127.5 - 1)
  with torch.no_grad():
    e = ref['backbone'](torch.nn.functional.interpolate(
        to_t(crop224), scale_factor=0.5, mode='bilinear', align_corners=True))
    y = ref['G'](to_t(result.target_crops[0]), e)[0]
  z = swapper.identity(astronaut)
  np.testing.assert_allclose(z, e[0].numpy(), rtol=1e-4, atol=1e-4 * float(e.norm()))
  y = (y[0].numpy().transpose(1, 2, 0) + 1.0) * 127.5
  assert np.max(np.abs(swapper.generate(result.target_crops, z)[0] - y)) < 0.05
  # Several sources (GHOST swaps them one at a time): mean direction at the mean length.
  e2 = swapper.identity(np.ascontiguousarray(astronaut[:, ::-1]))
  both = swapper.identity([astronaut, np.ascontiguousarray(astronaut[:, ::-1])])
  unit = lambda v: v / np.linalg.norm(v)
  np.testing.assert_allclose(unit(both), unit(unit(z) + unit(e2)), atol=1e-5)
  assert np.linalg.norm(both) == pytest.approx((np.linalg.norm(z) + np.linalg.norm(e2)) / 2,
                                               rel=1e-5)


def test_convert_generator_refusals_write_nothing(ghost_files, tmp_path, tmp_path_factory):
  """Wrong keys, wrong shapes, a D given as G and a code-running pickle: exit 2, one error
  line naming the problem, no output (nor temporary folder), and the pickle never ran."""
  files, ref = ghost_files['files'], ghost_files['models']
  sd = ref['G'].state_dict()
  renamed = {('generator.AADBlk2.add_blocks.0.fc9.weight' if
              k == 'generator.AADBlk2.add_blocks.0.fc1.weight' else k): v for k, v in sd.items()}
  torch.save(renamed, tmp_path / 'keys.pth')
  torch.save(dict(sd, **{'generator.AADBlk3.add_blocks.3.conv2.weight': torch.zeros(16, 8, 1, 1)}),
             tmp_path / 'shapes.pth')
  marker = tmp_path / 'MARKER'
  torch.save(dict(sd, **{'encoder.conv1.0.weight': _Payload(marker)}), tmp_path / 'evil.pth')
  cases = {'keys': (str(tmp_path / 'keys.pth'), "'generator.AADBlk2.add_blocks.0.fc1.weight'"),
           'shapes': (str(tmp_path / 'shapes.pth'),
                      "'generator.AADBlk3.add_blocks.3.conv2.weight'"),
           'd_as_g': (files['D'], 'discriminator'),
           'evil': (str(tmp_path / 'evil.pth'), 'weights-only')}
  env = swap_helpers.cli_env(tmp_path_factory)
  procs = {name: subprocess.Popen(
      [sys.executable, '-m', 'fsjax.main', 'convert-generator', g, str(tmp_path / f'out_{name}'),
       '--identity', files['backbone']], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=env) for name, (g, _) in cases.items()}
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    errors_ = [l for l in stderr.splitlines() if 'error' in l]
    assert proc.returncode == 2, (name, stderr[-2000:])
    assert len(errors_) == 1 and errors_[0].startswith('fsjax convert-generator: error: '), (
        name, stderr[-2000:])
    assert cases[name][1] in errors_[0], (name, errors_[0])
  assert not marker.exists()
  assert not [p for p in os.listdir(tmp_path) if 'out_' in p]  # nor .out_*.tmp-* folders


def test_ghost_finetune_config_matches_the_converted_release():
  """configs/ghost_finetune.py builds exactly what convert-generator writes for the real
  G_unet_2blocks / D_unet_2blocks (init_from's check), with GHOST's training defaults."""
  cfg = ghost_finetune.get_config()
  layout = convert.GeneratorLayout(2, ghost.ATTR_CHANNELS, ghost.GEN_CHANNELS, 512)
  d_layout = convert.DiscriminatorLayout(num_d=3, n_layers=5, ndf=64, max_channels=512)
  meta = ghost_swap.ghost_meta(layout, {'embedding_dim': 512}, discriminator=d_layout)
  source = init_from.Source('/ghost', 'export', meta['image_size'], meta['model'],
                            meta['alignment'], meta['discriminator'], None, meta)
  init_from.check_compatible(cfg, source)
  trainer.check_config(cfg)
  assert (cfg.loss.adv, cfg.loss.att, cfg.loss.id, cfg.loss.rec) == (1, 10, 20, 10)
  assert (cfg.optimizer.g_learning_rate, cfg.optimizer.b1, cfg.optimizer.b2,
          cfg.optimizer.weight_decay) == (4e-4, 0.0, 0.999, 1e-4)
  assert cfg.model.id_normalize is False and cfg.identity.checkpoint == ''
  cfg.model.id_normalize = True
  with pytest.raises(ValueError, match='model.id_normalize=False'):
    init_from.check_compatible(cfg, source)
  # aei reads exports by their file names (it sits below swap): the same names.
  assert init_from.EXPORT_FILES == (export.META_FILE, export.VARIABLES_DIR,
                                    export.DISCRIMINATOR_DIR)
  assert init_from.EXPORT_FORMAT == export.FORMAT


def test_finetune_starts_from_the_converted_checkpoint(ghost_files, tmp_path, jax_cache):
  """2 steps of `fsjax train` with init_from = a converted tiny GHOST export: G, EMA and D
  start from it (they move by about 2 Adam steps, not by a random init's distance), the
  identity encoder is the export's (copied into the workdir)."""
  del jax_cache  # FSJAX_TEST_JAX_CACHE=DIR keeps the train step compiled between sessions
  files = ghost_files['files']
  out = str(tmp_path / 'micro_export')
  ghost_swap.convert_ghost(files['G_micro'], out, files['backbone'],
                           discriminator_path=files['D_micro'], log=lambda s: None)
  config = train_helpers.test_config(steps=2, checkpoint_every=2)
  config.init_from = out
  config.dataset.alignment = 'ghost224'
  with pytest.raises(ValueError, match='model.id_normalize'):
    init_from.check(config)  # the export feeds G raw embeddings
  config.model.id_normalize = False
  workdir = str(tmp_path / 'ft')
  state = trainer.train_and_evaluate(config, workdir,
                                     data_source=train_helpers.fake_source(size=16))
  bundle = export.load_bundle(out)
  _, d_vars = export.load_discriminator(out)
  lr = config.optimizer.g_learning_rate
  for name, got, start in [('G', state.g_params, bundle.generator_variables['params']),
                           ('EMA', state.ema_params, bundle.generator_variables['params']),
                           ('D', state.d_params, d_vars['params'])]:
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(start)))
    assert 0 < moved <= 3 * lr, (name, moved)  # Adam: at most ~lr per step and parameter
  assert int(state.step) == 2
  _, id_vars, id_meta = identity_checkpoint.load_identity(os.path.join(workdir, 'identity'))
  assert id_meta['source']['init_from'] == out
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(id_vars),
               jax.device_get(bundle.identity_variables))
  # A workdir is a source too (fine-tuning fsjax's own runs): its newest G, EMA and D.
  config.init_from = workdir
  init_from.check(config)
  weights = init_from.load_weights(config, state)
  assert init_from.read_source(workdir).step == 2
  for key in ('g_params', 'ema_params', 'd_params'):
    jax.tree.map(np.testing.assert_array_equal, weights[key], jax.device_get(getattr(state, key)))
