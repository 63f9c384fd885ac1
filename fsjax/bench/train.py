"""Benchmark of the compiled AEI-Net training step: images/s, step time, compile time, memory,
model FLOPs, MFU and (on accelerators) the roofline bound on MFU."""

from __future__ import annotations

import copy
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fsjax.aei import train_lib
from fsjax.bench import jaxpr_cost
from fsjax.bench import machine
from fsjax.bench import profile
from fsjax.identity import resolve
from fsjax.models import random_weights
from fsjax.train import parallel


def bench_config(config: ml_collections.ConfigDict, *, dtype: str | None = None,
                 per_device_batch_size: int | None = None,
                 remat: bool | None = None) -> ml_collections.ConfigDict:
  """A copy of `config` for benchmarking: overrides applied, random identity encoder allowed.

  Without identity.checkpoint the identity encoder gets random weights of
  identity.arch (speed does not depend on the weights).
  """
  config = copy.deepcopy(config)
  with config.unlocked():
    if dtype:
      config.model.dtype = dtype
    if per_device_batch_size:
      config.per_device_batch_size = int(per_device_batch_size)
    if remat is not None:
      config.model.remat = bool(remat)
    if not config.identity.checkpoint:
      config.identity.allow_random = True  # random weights of resolve.layout(config)
  return config


def synthetic_batch(config: ml_collections.ConfigDict, global_batch: int, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """Host batch {'source', 'target': uint8 [B, S, S, 3], 'same': float32 [B]} of noise.

  One pair in five (rounded up) has 'same' = 1 and X_t = X_s, as with
  dataset.same_identity_ratio = 0.2, so the reconstruction loss is exercised.
  """
  rs = np.random.RandomState(seed)
  s = int(config.image_size)
  source = rs.randint(0, 256, (global_batch, s, s, 3)).astype(np.uint8)
  target = rs.randint(0, 256, (global_batch, s, s, 3)).astype(np.uint8)
  same = np.zeros([global_batch], np.float32)
  same[::5] = 1.0
  target[same > 0] = source[same > 0]
  return {'source': source, 'target': target, 'same': same}


def num_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def bench_identity(config: ml_collections.ConfigDict, workdir: str = ''):
  """(identity module, variables) of the config's encoder (fsjax.identity.resolve).

  The configured checkpoint's weights when identity.checkpoint is set; otherwise random
  weights of its layout (`bench_config` allows them: an auto_train encoder is not trained
  for a benchmark, speed does not depend on the weights).
  """
  found = resolve.resolve(config, workdir)
  return found.module, found.variables


def bench_state(config: ml_collections.ConfigDict, models: Any, g_tx: Any, d_tx: Any,
                mesh: jax.sharding.Mesh) -> Any:
  """A train_lib.TrainState at step 0 with random weights (`random_weights.random_variables`), replicated on `mesh`.

  Same structure, shapes and dtypes as trainer.init_state (checked), without compiling
  the initialisers.
  """
  abstract = jax.eval_shape(
      lambda key: train_lib.create_train_state(config, key, models, g_tx, d_tx),
      jax.random.PRNGKey(0))
  seed = int(config.seed)
  g_params = random_weights.random_variables(abstract.g_params, seed)
  d_params = random_weights.random_variables(abstract.d_params, seed + 1)
  state = train_lib.TrainState(
      step=np.zeros((), np.int32),
      g_params=g_params,
      g_batch_stats=random_weights.random_variables(abstract.g_batch_stats, seed + 2),
      d_params=d_params,
      d_batch_stats=random_weights.random_variables(abstract.d_batch_stats, seed + 3),
      g_opt_state=jax.tree.map(np.asarray, g_tx.init(g_params)),
      d_opt_state=jax.tree.map(np.asarray, d_tx.init(d_params)),
      ema_params=jax.tree.map(np.copy, g_params),
      rng=np.asarray(jax.random.key_data(jax.random.PRNGKey(seed))).reshape(
          abstract.rng.shape).astype(abstract.rng.dtype),
      nonfinite_count=np.zeros((), np.int32),
      nonfinite_total=np.zeros((), np.int32))
  want = jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype)), abstract)
  got = jax.tree.map(lambda a: (tuple(np.shape(a)), jnp.dtype(np.asarray(a).dtype)), state)
  if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
    raise ValueError('bench_state does not match train_lib.create_train_state')
  return parallel.replicate(state, mesh)


def bench_train(config: ml_collections.ConfigDict, *, steps: int = 10, warmup: int = 2,
                mesh: jax.sharding.Mesh | None = None, profile_dir: str | None = None,
                peak_flops: float | None = None, bandwidth: float | None = None,
                workdir: str | None = None) -> dict[str, Any]:
  """Times the real compiled training step (train_lib.make_train_step) on synthetic batches.

  Args:
    config: training config (see `bench_config` for overrides); per_device_batch_size
      rows per device, image_size S.
    steps: timed steps (each followed by block_until_ready).
    warmup: untimed steps after compilation.
    mesh: data mesh (default: all devices).
    profile_dir: if set, a jax.profiler trace of 3 extra steps is written there.
    peak_flops: override of the peak FLOP/s of the whole mesh used for MFU.
    bandwidth: memory bandwidth of one device in bytes/s for the roofline bound
      (default: `device_bandwidth`; none on CPU unless given).
    workdir: passed to trainer.setup_identity (auto-trained identity configs).
  Returns:
    Dict of figures: images_per_s, images_per_s_per_device, step_s_median, step_s_p90,
    compile_s, flops_per_step (global), mfu, peak_memory_bytes, and where the device's
    bandwidth is known, 'roofline' (jaxpr_cost.roofline of one device's program) and
    'mfu_bound' (the highest MFU this program can reach on it), ...
  """

  config = bench_config(config)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  n_dev = int(mesh.devices.size)
  global_batch = int(config.per_device_batch_size) * n_dev
  result: dict[str, Any] = {
      'mode': 'train', 'framework': 'jax', 'image_size': int(config.image_size),
      'dtype': config.model.dtype, 'remat': bool(config.model.remat),
      'per_device_batch_size': int(config.per_device_batch_size),
      'global_batch_size': global_batch, 'num_devices': n_dev,
      'steps': int(steps), 'warmup_steps': int(warmup)}

  t0 = time.perf_counter()
  identity_module, id_vars = bench_identity(config, workdir or '')
  models = train_lib.build_models(config, identity_module)
  g_tx, d_tx = train_lib.make_optimizers(config)
  state = bench_state(config, models, g_tx, d_tx, mesh)
  id_vars = parallel.replicate(id_vars, mesh)
  local_rows = parallel.local_batch_size(mesh, config.per_device_batch_size)
  host = synthetic_batch(config, local_rows, seed=int(config.seed) + jax.process_index())
  batch = parallel.shard_batch(host, mesh)
  jax.block_until_ready((state, id_vars, batch))
  result['setup_s'] = time.perf_counter() - t0
  result['g_params'] = num_params(state.g_params)
  result['d_params'] = num_params(state.d_params)
  result['identity_params'] = num_params(id_vars.get('params', {}))

  step_fn = train_lib.make_train_step(config, mesh, models, g_tx, d_tx)
  t0 = time.perf_counter()
  traced = step_fn.trace(state, batch, id_vars)
  lowered = traced.lower()
  compiled = lowered.compile()
  result['compile_s'] = time.perf_counter() - t0
  # Model FLOPs from the traced program (per device inside shard_map), for MFU.
  matrix_ops = jaxpr_cost.matrix_ops(traced.jaxpr)
  result['flops_per_step'] = sum(op.flops for op in matrix_ops) * n_dev

  try:
    flops_dev = machine.cost_flops(compiled.cost_analysis())
  except Exception:  # pylint: disable=broad-except
    flops_dev = None
  try:
    flops_hlo = machine.cost_flops(lowered.cost_analysis())
  except Exception:  # pylint: disable=broad-except
    flops_hlo = None
  # The compiled SPMD program is one device's: its FLOPs are per device. On GPUs XLA's
  # count leaves out the cuDNN convolutions, so MFU uses the model FLOPs above.
  result['flops_per_step_xla'] = flops_dev * n_dev if flops_dev else None
  result['flops_per_step_xla_unoptimized'] = flops_hlo
  try:
    mem = compiled.memory_analysis()
    result['compiled_temp_bytes'] = int(mem.temp_size_in_bytes)
    result['compiled_argument_bytes'] = int(mem.argument_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    pass

  def run_step():
    nonlocal state
    state, metrics = compiled(state, batch, id_vars)
    return state, metrics

  for _ in range(max(int(warmup), 1)):
    jax.block_until_ready(run_step())
  times = []
  for _ in range(int(steps)):
    t = time.perf_counter()
    out = run_step()
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t)
  metrics = out[1]
  if profile_dir:
    try:
      with jax.profiler.trace(profile_dir):
        for _ in range(3):
          jax.block_until_ready(run_step())
      result['profile_dir'] = profile_dir
      result['profile'] = profile.summarize_trace(profile_dir)
    except Exception as e:  # pylint: disable=broad-except  # the figures matter more
      result['profile'] = f'profiling failed: {type(e).__name__}: {e}'

  result.update(machine.timing_stats(times))
  step_s = result['step_s_median']
  result['images_per_s'] = global_batch / step_s
  result['images_per_s_per_device'] = result['images_per_s'] / n_dev
  values = {k: float(v) for k, v in jax.device_get(metrics).compute().items()}
  result['g_loss'] = values.get('g_loss')
  result['d_loss'] = values.get('d_loss')

  devices = list(mesh.devices.flat)
  result['peak_memory_bytes'] = machine.peak_device_memory(
      [d for d in devices if d.process_index == jax.process_index()])
  result['host_peak_rss_bytes'] = machine.host_peak_rss()

  platform_name = devices[0].platform
  if peak_flops is not None:
    result['peak_flops'] = float(peak_flops)
    result['peak_source'] = 'given'
  elif platform_name == 'cpu':
    result['peak_flops'] = machine.cpu_peak_flops(config.model.dtype)
    result['peak_source'] = f'measured {config.model.dtype} 2048^3 matmul, whole host'
  else:
    per_chip = machine.device_peak_flops(devices[0], config.model.dtype)
    result['peak_flops'] = per_chip * n_dev if per_chip else None
    result['peak_source'] = (f'datasheet dense {config.model.dtype} x {n_dev} '
                             f'({devices[0].device_kind})' if per_chip else 'unknown device')
  if result['flops_per_step'] and result.get('peak_flops'):
    result['achieved_flops'] = result['flops_per_step'] / step_s
    result['mfu'] = result['achieved_flops'] / result['peak_flops']
  else:
    result['achieved_flops'] = result['mfu'] = None
  if bandwidth is None:
    bandwidth = machine.device_bandwidth(devices[0])  # None on CPU
  if bandwidth and result.get('peak_flops'):
    bound = jaxpr_cost.roofline(matrix_ops, result['peak_flops'] / n_dev, bandwidth)
    result['roofline'] = dict(bound, bandwidth=float(bandwidth))
    result['mfu_bound'] = bound['mfu_bound']
  return result
