"""fsjax.bench.jaxpr_cost: exact FLOPs and bytes of a small traced program, and the roofline sums."""

import os
import sys

import jax
import jax.numpy as jnp
import pytest

from fsjax.bench import jaxpr_cost
from fsjax.bench import machine as bench_machine
from fsjax.bench import run as bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('wrap', ['plain', 'jit'])
def test_matrix_ops_count_operands_and_neighbours(wrap):
  """conv -> relu -> conv -> sum: each conv's own bytes plus the round trips relu forces."""
  x = jnp.ones((2, 8, 8, 4), jnp.float32)
  w1 = jnp.ones((3, 3, 4, 8), jnp.float32)
  w2 = jnp.ones((1, 1, 8, 16), jnp.float32)
  second = jax.jit(_conv) if wrap == 'jit' else _conv  # a jit body is inlined

  def f(x, w1, w2):
    return jnp.sum(second(jax.nn.relu(_conv(x, w1)), w2))  # relu: a custom_jvp call

  ops = jaxpr_cost.matrix_ops(jax.make_jaxpr(f)(x, w1, w2))
  assert [op.primitive for op in ops] == ['conv_general_dilated'] * 2
  assert ops[0].flops == 2 * (2 * 8 * 8 * 8) * 9 * 4
  assert ops[1].flops == 2 * (2 * 8 * 8 * 16) * 8
  # Own: x + w1 + y1, r + w2 + y2 (float32). Neighbours: relu reads y1 (conv 1) and
  # writes r (conv 2); the sum reads y2 (conv 2); x comes from outside (not counted).
  assert ops[0].bytes == 4 * (512 + 288 + 1024)
  assert ops[0].neighbour_bytes == 4 * 1024
  assert ops[1].bytes == 4 * (1024 + 128 + 2048)
  assert ops[1].neighbour_bytes == 4 * (1024 + 2048)
  assert jaxpr_cost.jaxpr_flops(jax.make_jaxpr(f)(x, w1, w2)) == ops[0].flops + ops[1].flops


def test_matrix_ops_one_jit_body_at_two_call_sites():
  """Two calls of one jitted conv share a body (the same Vars) but are two ops."""
  x = jnp.ones((2, 8, 8, 8), jnp.float32)
  w = jnp.ones((1, 1, 8, 8), jnp.float32)
  conv = jax.jit(_conv)
  jaxpr = jax.make_jaxpr(lambda x, w: jnp.sum(conv(jax.nn.relu(conv(x, w)), w)))(x, w)
  bodies = [e.params['jaxpr'] for e in jaxpr.jaxpr.eqns if e.primitive.name in ('jit', 'pjit')]
  assert len(bodies) == 2 and bodies[0] is bodies[1]  # what this test is about
  ops = jaxpr_cost.matrix_ops(jaxpr)
  act = 4 * 2 * 8 * 8 * 8
  assert [op.bytes for op in ops] == [2 * act + 4 * 64] * 2
  assert [op.neighbour_bytes for op in ops] == [act, 2 * act]  # relu reads; relu writes, sum reads


def test_matrix_ops_scan_and_cond():
  """scan counts its body times its length; cond its costliest branch."""
  a = jnp.ones((4, 8), jnp.float32)
  b = jnp.ones((8, 8), jnp.float32)

  def scanned(a, b):
    return jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=3)[0]

  def branched(p, a, b):
    return jax.lax.cond(p, lambda a, b: a @ b @ b, lambda a, b: a @ b, a, b)

  one = 2 * 4 * 8 * 8
  assert jaxpr_cost.jaxpr_flops(jax.make_jaxpr(scanned)(a, b)) == 3 * one
  assert jaxpr_cost.jaxpr_flops(jax.make_jaxpr(branched)(True, a, b)) == 2 * one


def test_roofline_sums():
  compute_bound = jaxpr_cost.MatrixOp('dot_general', (), 'float32', flops=100.0, bytes=10.0,
                                      neighbour_bytes=10.0)
  memory_bound = jaxpr_cost.MatrixOp('conv_general_dilated', (), 'float32', flops=10.0,
                                     bytes=100.0, neighbour_bytes=50.0)
  r = jaxpr_cost.roofline([compute_bound, memory_bound], peak_flops=10.0, bandwidth=10.0)
  assert r['compute_s'] == pytest.approx(11.0)
  assert r['step_s'] == pytest.approx(10.0 + 15.0)
  assert r['memory_bound_s'] == pytest.approx(15.0)
  assert r['mfu_bound'] == pytest.approx(11.0 / 25.0)
  assert r['step_s_own'] == pytest.approx(20.0)
  assert r['mfu_bound_own'] == pytest.approx(11.0 / 20.0)
  assert r['bytes'] == pytest.approx(170.0)


def test_roofline_script_on_tiny_config(capsys):
  """scripts/roofline.py traces the tiny config's step and prints a bound per device."""
  sys.path.insert(0, os.path.join(REPO, 'scripts'))
  try:
    import roofline  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  assert roofline.main(['--config', os.path.join(REPO, 'configs/tiny.py'), '--batch', '2',
                        '--device', 'H100,TPU v5e', '--top', '3']) == 0
  out = capsys.readouterr().out
  lines = [l for l in out.splitlines() if 'MFU <=' in l]
  assert [l.split()[0] for l in lines] == ['H100', 'TPU']
  for line in lines:
    bound = float(line.split('MFU <= ')[1].split('%')[0])
    assert 0.0 < bound <= 100.0, line
  assert 'largest shares of the H100 bound' in out
  with pytest.raises(SystemExit):
    roofline.main(['--device', 'H1000'])


def test_bench_table_prints_the_roofline():
  ops = [jaxpr_cost.MatrixOp('dot_general', (), 'bfloat16', flops=1e12, bytes=1e9)]
  roof = jaxpr_cost.roofline(ops, 1e15, 1e12)
  row = {'mode': 'train', 'framework': 'jax', 'global_batch_size': 8, 'dtype': 'bfloat16',
         'images_per_s': 80.0, 'images_per_s_per_device': 80.0, 'step_s_median': 0.1,
         'step_s_p90': 0.1, 'num_devices': 1, 'peak_flops': 1e15,
         'roofline': dict(roof, bandwidth=1e12), 'mfu_bound': roof['mfu_bound']}
  table = bench.format_table([row])
  assert 'step >= 1.0 ms at 1000 TFLOP/s and 1.00 TB/s' in table
  assert 'MFU <= 100.0%' in table


def test_device_bandwidth_table():
  class FakeDevice:
    device_kind = 'NVIDIA H200'
  assert bench_machine.device_bandwidth(FakeDevice()) == pytest.approx(4.8e12)
  FakeDevice.device_kind = 'NVIDIA H100 80GB HBM3'
  assert bench_machine.device_bandwidth(FakeDevice()) == pytest.approx(3.35e12)
  FakeDevice.device_kind = 'cpu'
  assert bench_machine.device_bandwidth(FakeDevice()) is None
  assert bench_machine.kind_peaks('TPU v5p', 'float32') == pytest.approx((459e12, 2.765e12))
