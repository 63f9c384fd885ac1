"""The highest MFU a config's training step can reach on an accelerator: a roofline bound.

  python scripts/roofline.py --config configs/default.py --dtype bfloat16 \
      --batch 32,64 --device H100,H200,'TPU v5p'

Traces (never compiles or runs) one device's training step at full size on abstract
inputs, lists its convolutions and matrix products with the bytes each must move
(fsjax.bench.jaxpr_cost), and prints for each device kind of fsjax.bench.machine.DEVICE_PEAKS asked for
the lower bound on the step time, max(FLOPs / peak, bytes / bandwidth) summed over those
ops, and the MFU bound it implies (also without the traffic of their neighbours, which
XLA:TPU can fuse into a convolution); then the ops that dominate the bound. Runs on any host
in seconds: it traces the accelerator program (fsjax.models.cpu_conv picks its CPU-only
gradient rules by jax.default_backend() while tracing, so the trace is told 'gpu').
`fsjax bench` reports the same bound for the device it runs on.
"""

import argparse
import collections
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fsjax.aei import train_lib
from fsjax.bench import jaxpr_cost
from fsjax.bench import machine as bench_machine
from fsjax.bench import train as bench_train
from fsjax.train import config_files
from fsjax.train import parallel


def trace_matrix_ops(config, batch: int) -> list[jaxpr_cost.MatrixOp]:
  """Matrix ops of one device's training step at per-device batch `batch` (accelerator rules)."""
  config = bench_train.bench_config(config, per_device_batch_size=batch)
  mesh = parallel.make_mesh(jax.devices()[:1])
  with mock.patch('jax.default_backend', return_value='gpu'):
    identity_module, id_vars = bench_train.bench_identity(config, '')
    models = train_lib.build_models(config, identity_module)
    g_tx, d_tx = train_lib.make_optimizers(config)
    rep, dat = NamedSharding(mesh, P()), NamedSharding(mesh, P(parallel.DATA_AXIS))
    state = jax.eval_shape(
        lambda key: train_lib.create_train_state(config, key, models, g_tx, d_tx),
        jax.random.PRNGKey(0))
    spec = lambda a, sharding: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=sharding)
    state = jax.tree.map(lambda a: spec(a, rep), state)
    id_vars = jax.tree.map(lambda a: spec(a, rep), id_vars)
    s = int(config.image_size)
    images = jax.ShapeDtypeStruct((batch, s, s, 3), jnp.uint8, sharding=dat)
    batch_spec = {'source': images, 'target': images,
                  'same': jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=dat)}
    step = train_lib.make_train_step(config, mesh, models, g_tx, d_tx)
    return jaxpr_cost.matrix_ops(step.trace(state, batch_spec, id_vars).jaxpr)


def top_ops(ops, peak_flops: float, bandwidth: float, top: int) -> list[str]:
  """The op shapes that take most of the bound, one line each."""
  groups = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for op in ops:
    key = (op.primitive, op.shapes, op.dtype)
    g = groups[key]
    g[0] += max(op.flops / peak_flops, op.total_bytes / bandwidth)
    g[1] += op.flops / peak_flops
    g[2] += 1
  total = sum(g[0] for g in groups.values())
  lines = []
  for (prim, shapes, dtype), (t, c, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
    desc = ' x '.join('x'.join(map(str, s)) for s in shapes[:-1]) + ' -> ' + 'x'.join(
        map(str, shapes[-1]))
    lines.append(f'  {100 * t / total:5.1f}% {1e3 * t:7.2f} ms (compute {1e3 * c:6.2f} ms) '
                 f'x{n:<3} {prim.replace("_general_dilated", "").replace("_general", "")} '
                 f'{desc} {dtype}')
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/default.py')
  parser.add_argument('--dtype', default='bfloat16', help="compute dtype ('bfloat16' | 'float32')")
  parser.add_argument('--batch', default='32', help='per-device batch sizes, comma separated')
  parser.add_argument('--device', default='H100,H200',
                      help=f'device kinds, comma separated, of: {", ".join(bench_machine.DEVICE_PEAKS)}')
  parser.add_argument('--top', type=int, default=12, help='op shapes to list (0: none)')
  args = parser.parse_args(argv)
  kinds = [k.strip() for k in args.device.split(',') if k.strip()]
  unknown = [k for k in kinds if k not in bench_machine.DEVICE_PEAKS]
  if unknown:
    parser.error(f'unknown device {unknown[0]!r}; known: {", ".join(bench_machine.DEVICE_PEAKS)}')
  peaks = {k: bench_machine.kind_peaks(k, args.dtype) for k in kinds}  # (FLOP/s, bytes/s)
  config = bench_train.bench_config(config_files.load(args.config), dtype=args.dtype)
  print(f'{args.config} ({config.image_size} px, {args.dtype}), one device, model FLOPs '
        'and the bytes of its convolutions and matrix products')
  for batch in (int(b) for b in args.batch.split(',')):
    ops = trace_matrix_ops(config, batch)
    print(f'batch {batch}: {len(ops)} matrix ops, '
          f'{sum(o.flops for o in ops) / 1e12:.3f} TFLOP, '
          f'{sum(o.total_bytes for o in ops) / 1e9:.1f} GB')
    for kind in kinds:
      peak, bandwidth = peaks[kind]
      r = jaxpr_cost.roofline(ops, peak, bandwidth)
      print(f'  {kind:<12} {peak / 1e12:6.1f} TFLOP/s {bandwidth / 1e12:5.2f} TB/s: step >= '
            f'{1e3 * r["step_s"]:7.2f} ms (compute alone {1e3 * r["compute_s"]:.2f} ms, '
            f'bandwidth-bound ops {1e3 * r["memory_bound_s"]:.2f} ms), '
            f'MFU <= {100 * r["mfu_bound"]:.1f}% '
            f'({100 * r["mfu_bound_own"]:.1f}% counting only their own operands)')
    if args.top and kinds:
      print(f'  largest shares of the {kinds[0]} bound:')
      print('\n'.join(top_ops(ops, *peaks[kinds[0]], args.top)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
