"""`fsjax bench` end to end on the tiny config, so the command cannot rot (no timing asserts).

One CLI run does every mode (train with the PyTorch comparison, data, swap) for 2 steps;
the test checks that the JSON has each mode's figures and that they are positive.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from fsjax.bench import machine as bench_machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(value):
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope='module')
def bench_json(tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'bench.json'
  env = dict(os.environ)
  # One CPU device; LLVM's expensive optimisations off: compiling the tiny step takes
  # about half as long (it runs slower, which a 2-step smoke test does not mind).
  flags = [f for f in env.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  env['XLA_FLAGS'] = ' '.join(flags + ['--xla_backend_optimization_level=0',
                                       '--xla_llvm_disable_expensive_passes=true'])
  env['JAX_PLATFORMS'] = 'cpu'
  # PyTorch's spinning OpenMP threads slow to seconds a step when other jobs share the
  # cores (a timing concern only); passive waiting keeps the smoke test short.
  env['OMP_WAIT_POLICY'] = 'PASSIVE'
  cmd = [sys.executable, '-m', 'fsjax.main', 'bench', '--config', 'configs/tiny.py',
         '--mode', 'train,data,swap', '--compare-torch', '--steps', '2', '--warmup', '1',
         '--swap_batches', '1,2', '--data_batches', '2', '--data_source', 'memory',
         '--json', str(out)]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out) as f:
    data = json.load(f)
  data['stdout'] = proc.stdout
  return data


def test_train_mode_jax_and_torch(bench_json):
  results = bench_json['results']
  jax_r = next(r for r in results if r['mode'] == 'train' and r['framework'] == 'jax')
  torch_r = next(r for r in results if r['mode'] == 'train' and r['framework'] == 'torch')
  for key in ('images_per_s', 'images_per_s_per_device', 'step_s_median', 'step_s_p90',
              'compile_s', 'flops_per_step', 'peak_flops', 'mfu', 'host_peak_rss_bytes',
              'g_params', 'd_params'):
    assert _positive(jax_r[key]), (key, jax_r[key])
  assert jax_r['global_batch_size'] == 2 and jax_r['image_size'] == 64
  assert math.isfinite(jax_r['g_loss']) and math.isfinite(jax_r['d_loss'])
  for key in ('images_per_s', 'step_s_median', 'step_s_p90', 'threads'):
    assert _positive(torch_r[key]), (key, torch_r[key])
  assert torch_r['global_batch_size'] == jax_r['global_batch_size']
  # Same architecture on both sides.
  assert torch_r['g_params'] == jax_r['g_params']
  assert torch_r['d_params'] == jax_r['d_params']
  ratio = next(r for r in results if r['mode'] == 'compare')
  assert _positive(ratio['jax_over_eager'])
  assert 'jax over eager' in bench_json['stdout']
  assert bench_json['environment']['platform'] == 'cpu'
  assert 'fsjax bench' in bench_json['command']


def test_data_mode(bench_json):
  data = next(r for r in bench_json['results'] if r['mode'] == 'data')
  assert data['source'] == 'memory:synthetic_png'
  for key in ('pairs_per_s', 'images_decoded_per_s', 'train_pairs_per_s', 'headroom'):
    assert _positive(data[key]), (key, data[key])


def test_swap_mode(bench_json):
  swap = next(r for r in bench_json['results'] if r['mode'] == 'swap')
  assert [row['batch'] for row in swap['rows']] == [1, 2]
  for b in (1, 2):
    for key in (f'swap_b{b}_model_per_s', f'swap_b{b}_end_to_end_per_s'):
      assert _positive(swap[key]), (key, swap[key])


def test_peak_table_and_timing_stats():
  class FakeDevice:
    device_kind = 'NVIDIA H100 80GB HBM3'
  assert bench_machine.device_peak_flops(FakeDevice(), 'bfloat16') == pytest.approx(989.4e12)
  FakeDevice.device_kind = 'NVIDIA H100 PCIe'
  assert bench_machine.device_peak_flops(FakeDevice(), 'bfloat16') == pytest.approx(756e12)
  FakeDevice.device_kind = 'TPU v5 lite'
  assert bench_machine.device_peak_flops(FakeDevice(), 'float32') == pytest.approx(197e12)
  FakeDevice.device_kind = 'cpu'
  assert bench_machine.device_peak_flops(FakeDevice(), 'float32') is None
  stats = bench_machine.timing_stats([1.0, 2.0, 3.0, 4.0, 10.0])
  assert stats['step_s_median'] == 3.0 and 4.0 < stats['step_s_p90'] <= 10.0

