"""`fsjax convert-arcface`: .pth and ONNX (torch-exported, MXNet-style) -> identity checkpoint."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import torch

import fsjax
from fsjax import models
from fsjax.data import paths
from fsjax.identity import checkpoint as identity
from fsjax.identity import convert as arcface_convert
from fsjax.identity import resolve
from fsjax.bench.torch_reference import iresnet as torch_iresnet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Preprocessed(torch.nn.Module):
  """MXNet-style recognizer: takes 0-255 pixels, (x - 127.5) * 0.0078125 inside the graph."""

  def __init__(self, model):
    super().__init__()
    self.model = model

  def forward(self, x):
    return self.model((x - 127.5) * 0.0078125)


def _torch_model(arch, seed, eps=1e-5):
  torch.manual_seed(seed)
  model = torch_iresnet.iresnet(arch, eps=eps)
  torch_iresnet.randomize_batchnorm(model, seed)
  torch_iresnet.calibrate_batchnorm(model, torch.rand(4, 3, 112, 112) * 2 - 1)
  return model.eval()


def _export_onnx(module, path, **kwargs):
  module.eval()
  torch.onnx.export(module, torch.zeros(1, 3, 112, 112), path, dynamo=False,
                    input_names=['input.1'], output_names=['embedding'],
                    dynamic_axes={'input.1': {0: 'batch'}}, **kwargs)
  module.eval()  # export restores the caller's mode; keep eval for the comparisons


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
  """arch -> (eval-mode torch model, .pth path, .onnx path), plus 'mxnet' (tiny, eps 2e-5)."""
  d = tmp_path_factory.mktemp('arcface_src')
  out = {}
  for arch in ('tiny', 'r18'):
    model = _torch_model(arch, seed=7)
    torch.save(model.state_dict(), d / f'{arch}.pth')
    _export_onnx(model, str(d / f'{arch}.onnx'))  # eval export: BNs after convs are folded
    out[arch] = (model, str(d / f'{arch}.pth'), str(d / f'{arch}.onnx'))
  mx = _Preprocessed(_torch_model('tiny', seed=8, eps=2e-5))
  _export_onnx(mx, str(d / 'mxnet_style.onnx'), do_constant_folding=False)  # BNs kept
  out['mxnet'] = (mx, None, str(d / 'mxnet_style.onnx'))
  return out


def _torch_embed(model, x_uint8, raw):
  x = torch.from_numpy(x_uint8.transpose(0, 3, 1, 2).astype(np.float32))
  with torch.no_grad():
    e = model(x if raw else (x - 127.5) / 127.5).numpy()
  return e / np.linalg.norm(e, axis=-1, keepdims=True)


def _faces(n=3, seed=0):
  return np.random.RandomState(seed).randint(0, 256, (n, 112, 112, 3)).astype(np.uint8)


@pytest.mark.parametrize('arch', ['tiny', 'r18'])
@pytest.mark.parametrize('fmt', ['pth', 'onnx'])
def test_convert_and_load_matches_torch(sources, tmp_path, arch, fmt):
  model, pth, onnx_path = sources[arch]
  logs = []
  meta = arcface_convert.convert(pth if fmt == 'pth' else onnx_path, str(tmp_path / 'out'),
                                 num_verify=2, log=logs.append)
  assert meta['verification']['worst_cosine'] > 0.9999
  assert any('worst cosine' in line for line in logs)
  layers, width, dim = torch_iresnet.ARCHS[arch]
  saved = json.loads((tmp_path / 'out' / 'identity.json').read_text())
  assert (saved['arch'], saved['layers'], saved['width'], saved['embedding_dim']) == (
      arch, list(layers), width, dim)
  assert saved['bn_eps'] == pytest.approx(1e-5)
  assert (saved['input_size'], saved['color'], saved['normalisation'], saved['alignment']) == (
      112, 'RGB', '(x-127.5)/127.5', 'arcface')

  encode = fsjax.load_identity_encoder(str(tmp_path / 'out'))
  faces = _faces()
  want = _torch_embed(model, faces, raw=False)
  for inp in (faces, (faces.astype(np.float32) - 127.5) / 127.5):  # uint8 and [-1, 1] float
    got = np.asarray(encode(inp))
    assert got.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
    assert np.min(np.sum(got * want, -1)) > 0.9999
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_convert_mxnet_style_onnx(sources, tmp_path):
  """Unfolded BNs with eps 2e-5, PRelu slopes via Unsqueeze, (x-127.5)*0.0078125 inside."""
  model, _, onnx_path = sources['mxnet']
  meta = arcface_convert.convert(onnx_path, str(tmp_path / 'out'), num_verify=2,
                                 log=lambda s: None)
  assert meta['bn_eps'] == pytest.approx(2e-5)
  assert meta['arch'] == 'tiny'
  encode = fsjax.load_identity_encoder(str(tmp_path / 'out'))
  faces = _faces(seed=1)
  want = _torch_embed(model, faces, raw=True)
  np.testing.assert_allclose(np.asarray(encode(faces)), want, atol=1e-4)


def test_cli_converts_onnx_and_pth_errors_name_the_key(sources, tmp_path):
  _, pth, onnx_path = sources['tiny']
  cli = [sys.executable, '-m', 'fsjax.main', 'convert-arcface']
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  ok = subprocess.run(cli + [onnx_path, str(tmp_path / 'ok'), '--verify_inputs=1'],
                      capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
  assert ok.returncode == 0, ok.stderr
  assert 'worst cosine' in ok.stdout and (tmp_path / 'ok' / 'identity.json').exists()

  sd = torch.load(pth, weights_only=True)
  del sd['layer2.0.bn1.running_var']
  torch.save(sd, tmp_path / 'missing.pth')
  bad = subprocess.run(cli + [str(tmp_path / 'missing.pth'), str(tmp_path / 'bad'),
                              '--no-verify'],
                       capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
  assert bad.returncode == 1
  err_lines = [l for l in bad.stderr.splitlines() if 'error' in l]
  assert len(err_lines) == 1 and "'layer2.0.bn1.running_var'" in err_lines[0], bad.stderr
  assert not (tmp_path / 'bad').exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.bad')]  # no temp dir left


@pytest.mark.parametrize('edit,key', [
    ('missing', 'layer1.0.conv2.weight'),
    ('shape', 'layer3.0.downsample.0.weight'),
    ('shape', 'fc.weight'),
    ('unexpected', 'layer1.0.extra.weight'),
])
def test_bad_pth_names_the_key_and_writes_nothing(sources, tmp_path, edit, key):
  sd = torch.load(sources['tiny'][1], weights_only=True)
  if edit == 'missing':
    del sd[key]
  elif edit == 'shape':
    sd[key] = torch.zeros(*sd[key].shape[:-1], sd[key].shape[-1] + 1)
  else:
    sd[key] = torch.zeros(3)
  torch.save(sd, tmp_path / 'bad.pth')
  with pytest.raises(arcface_convert.ConversionError, match=f"'{key}'") as err:
    arcface_convert.convert(str(tmp_path / 'bad.pth'), str(tmp_path / 'out'), verify=False,
                            log=lambda s: None)
  assert '\n' not in str(err.value)
  assert os.listdir(tmp_path) == ['bad.pth']


def test_failed_verification_writes_nothing(sources, tmp_path, monkeypatch):
  real = arcface_convert.torch_forward
  monkeypatch.setattr(arcface_convert, 'torch_forward',
                      lambda *a: real(*a) + np.random.RandomState(0).normal(0, 1, (2, 64)))
  with pytest.raises(arcface_convert.ConversionError, match='verification failed'):
    arcface_convert.convert(sources['tiny'][1], str(tmp_path / 'out'), num_verify=2,
                            log=lambda s: None)
  assert not os.listdir(tmp_path)


def test_onnx_with_foreign_layer_names_the_node(tmp_path):
  model = _torch_model('tiny', seed=9)
  model.layer2[0].prelu = torch.nn.ReLU()
  _export_onnx(model, str(tmp_path / 'relu.onnx'))
  with pytest.raises(arcface_convert.ConversionError, match='Relu') as err:
    arcface_convert.convert(str(tmp_path / 'relu.onnx'), str(tmp_path / 'out'),
                            log=lambda s: None)
  assert '\n' not in str(err.value)
  assert not (tmp_path / 'out').exists()


def test_refuses_existing_output(sources, tmp_path):
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'mine.txt').write_text('not an identity checkpoint')
  with pytest.raises(paths.OutputError, match='exists'):
    arcface_convert.convert(sources['tiny'][1], str(tmp_path / 'out'), verify=False,
                            log=lambda s: None)
  with pytest.raises(paths.OutputError, match='not an earlier identity checkpoint'):
    arcface_convert.convert(sources['tiny'][1], str(tmp_path / 'out'), verify=False,
                            overwrite=True, log=lambda s: None)
  assert os.listdir(tmp_path / 'out') == ['mine.txt']


def test_feature_scale_not_one_is_folded(sources, tmp_path):
  model, pth, _ = sources['tiny']
  sd = torch.load(pth, weights_only=True)
  sd['features.weight'] = torch.linspace(-2.0, 2.0, 64) + 0.01  # includes negatives
  torch.save(sd, tmp_path / 'scaled.pth')
  arcface_convert.convert(str(tmp_path / 'scaled.pth'), str(tmp_path / 'out'), num_verify=2,
                          log=lambda s: None)
  model.features.weight.data.copy_(sd['features.weight'])
  try:
    want = _torch_embed(model, _faces(seed=2), raw=False)
  finally:
    model.features.weight.data.fill_(1.0)
  got = np.asarray(identity.load_identity_encoder(str(tmp_path / 'out'))(_faces(seed=2)))
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_load_identity_and_build_identity(sources, tmp_path):
  arcface_convert.convert(sources['tiny'][1], str(tmp_path / 'ckpt'), verify=False,
                          log=lambda s: None)
  module, variables, meta = identity.load_identity(str(tmp_path / 'ckpt'))
  assert module.layers == (1, 1, 1, 1) and module.embedding_dim == 64
  assert set(variables) == {'params', 'batch_stats'}
  assert models.build_identity(meta).width == 8

  config = ml_collections.ConfigDict({
      'seed': 0, 'dataset': {'alignment': 'arcface'},
      'model': {'id_dim': 64, 'dtype': 'bfloat16'},
      'identity': {'checkpoint': str(tmp_path / 'ckpt'), 'arch': 'r50',
                   'allow_random': False, 'auto_train': ''}})
  built = resolve.resolve(config).module
  assert (built.layers, built.embedding_dim) == ((1, 1, 1, 1), 64)
  assert np.dtype(built.dtype) == np.dtype('bfloat16')

  config.identity.checkpoint = ''
  with pytest.raises(resolve.IdentityCheckpointError, match='convert-arcface'):
    resolve.resolve(config)
  config.identity.allow_random = True
  config.identity.arch = 'tiny'
  assert resolve.resolve(config).module.width == 8
  config.identity.arch = 'r18'
  with pytest.raises(ValueError, match='id_dim'):
    resolve.resolve(config)


def test_encoder_rejects_unbatched_or_wrong_size(sources, tmp_path):
  arcface_convert.convert(sources['tiny'][1], str(tmp_path / 'ckpt'), verify=False,
                          log=lambda s: None)
  encode = fsjax.load_identity_encoder(str(tmp_path / 'ckpt'))
  with pytest.raises(ValueError, match='batch'):
    encode(np.zeros((112, 112, 3), np.uint8))
  with pytest.raises(ValueError, match='112'):
    encode(np.zeros((1, 128, 128, 3), np.uint8))
