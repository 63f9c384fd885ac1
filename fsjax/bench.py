"""Throughput benchmarks: the compiled training step, the swap and the input pipeline.

Three modes, each returning a flat dict of figures (the `fsjax bench` command prints them
as a table and writes them as JSON):

  * `bench_train`: the real training step of fsjax.train_lib (generator and
    discriminator updates, frozen identity encoder, every loss, EMA), compiled once with
    `make_train_step` over all devices, on a synthetic batch that stays on the devices.
    Warm-up steps, then timed steps each ended by `block_until_ready`. Reports images/s
    (global and per device), step time (median, p90), compile time, peak device memory,
    model FLOPs per step (the traced program's convolutions and matrix products,
    `jaxpr_cost`; XLA's cost analysis is recorded beside it), the model FLOPs utilisation
    (MFU) against the device's peak (`DEVICE_PEAKS`; on CPU a peak measured with a large
    matrix product, see `cpu_peak_flops`) and, on accelerators, the roofline bound on MFU
    from the device's memory bandwidth (`jaxpr_cost.roofline`).
  * `bench_swap`: model-only swap throughput (aligned crops -> swapped crops) at batch 1
    and a large batch, and end to end (detection, alignment, model, paste-back) with a
    random-weight `Swapper` of the config's sizes on skimage's astronaut photo.
  * `bench_data`: pairs/s the grain pipeline delivers at the configured size and batch,
    next to the pairs/s the training step consumes.

The PyTorch baseline of the same training step lives in fsjax.bench_torch
(`--compare_torch`); `compare` puts both side by side.

Figures depend on the machine's load: on a shared CPU, read them with the load average
recorded in the result ('load_avg_1m').
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import resource
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fsjax import jaxpr_cost

# Per chip: dense peak TFLOP/s (bfloat16, float32) and memory bandwidth (TB/s), datasheet
# figures. float32 is what XLA's default matmul precision runs at: TF32 tensor cores on
# NVIDIA Ampere/Hopper, one bf16 MXU pass on TPU. Keys are matched as substrings of
# `device.device_kind` (longest first).
DEVICE_PEAKS = {
    'TPU v4': (275.0, 275.0, 1.2),
    'TPU v5 lite': (197.0, 197.0, 0.819),  # v5e
    'TPU v5e': (197.0, 197.0, 0.819),
    'TPU v5p': (459.0, 459.0, 2.765),
    'TPU v5': (459.0, 459.0, 2.765),  # v5p reports 'TPU v5'
    'TPU v6 lite': (918.0, 918.0, 1.64),  # v6e (Trillium)
    'TPU v6e': (918.0, 918.0, 1.64),
    'A100': (312.0, 156.0, 2.039),  # SXM 80GB (40GB: 1.555 TB/s)
    'H100 PCIe': (756.0, 378.0, 2.0),
    'H100': (989.4, 494.7, 3.35),  # SXM / HBM3
    'H200': (989.4, 494.7, 4.8),
}


def kind_peaks(kind: str, dtype: str) -> tuple[float, float] | None:
  """(peak FLOP/s for `dtype`, memory bandwidth in bytes/s) of one chip, or None if unknown.

  Args:
    kind: a `device.device_kind` or a key of DEVICE_PEAKS (matched as a substring,
      case-insensitive, longest key first).
    dtype: compute dtype name ('bfloat16' or 'float32').
  """
  for key in sorted(DEVICE_PEAKS, key=len, reverse=True):
    if key.lower() in (kind or '').lower():
      bf16, fp32, tbps = DEVICE_PEAKS[key]
      return 1e12 * (bf16 if _is_bf16(dtype) else fp32), 1e12 * tbps
  return None


def device_peak_flops(device: jax.Device, dtype: str) -> float | None:
  """Datasheet dense peak FLOP/s of one accelerator chip for `dtype`, or None if unknown.

  Args:
    device: a jax device (its device_kind is matched against DEVICE_PEAKS).
    dtype: compute dtype name ('bfloat16' or 'float32').
  """
  peaks = kind_peaks(getattr(device, 'device_kind', ''), dtype)
  return peaks[0] if peaks else None


def device_bandwidth(device: jax.Device) -> float | None:
  """Datasheet memory bandwidth of one accelerator chip in bytes/s, or None if unknown."""
  peaks = kind_peaks(getattr(device, 'device_kind', ''), 'bfloat16')
  return peaks[1] if peaks else None


def _is_bf16(dtype: Any) -> bool:
  return str(dtype).lower() in ('bfloat16', 'bf16', "<class 'jax.numpy.bfloat16'>")


def cpu_peak_flops(dtype: str = 'float32', n: int = 2048, repeats: int = 5) -> float:
  """Measured FLOP/s of this host's CPUs: best of `repeats` [n, n] x [n, n] products.

  XLA runs the product on its intra-op thread pool (all cores), so this is the
  whole-host figure the CPU MFU is relative to.
  """
  dt = jnp.bfloat16 if _is_bf16(dtype) else jnp.float32
  a = jnp.ones((n, n), dt)
  b = jnp.ones((n, n), dt)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def load_average() -> float | None:
  """1-minute load average of this host (None where the OS has none)."""
  try:
    return float(os.getloadavg()[0])
  except OSError:
    return None


def environment() -> dict[str, Any]:
  """Host, device and library facts recorded with every result."""
  dev = jax.devices()[0]
  env = {
      'date': time.strftime('%Y-%m-%d %H:%M:%S'),
      'host': platform.node(),
      'platform': dev.platform,
      'device_kind': dev.device_kind,
      'num_devices': jax.device_count(),
      'num_processes': jax.process_count(),
      'cpu_count': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                   else os.cpu_count(),
      'jax_version': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'load_avg_1m': load_average(),
  }
  try:
    import flax  # pylint: disable=g-import-not-at-top
    env['flax_version'] = flax.__version__
  except ImportError:
    pass
  return env


def timing_stats(seconds: list[float]) -> dict[str, float]:
  """Median, p90, mean and min of per-step times in seconds."""
  a = np.asarray(seconds, np.float64)
  return {'step_s_median': float(np.median(a)), 'step_s_p90': float(np.percentile(a, 90)),
          'step_s_mean': float(a.mean()), 'step_s_min': float(a.min())}


def _cost_flops(cost: Any) -> float | None:
  """'flops' from a (compiled or lowered) cost analysis: a dict, or a list of dicts."""
  if cost is None:
    return None
  if isinstance(cost, (list, tuple)):
    vals = [_cost_flops(c) for c in cost]
    vals = [v for v in vals if v]
    return float(sum(vals)) if vals else None
  flops = cost.get('flops') if hasattr(cost, 'get') else None
  return float(flops) if flops and flops > 0 else None


def _peak_device_memory(devices) -> int | None:
  """Largest peak_bytes_in_use over `devices` (None where memory_stats is unsupported)."""
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(int(stats['peak_bytes_in_use']))
  return max(peaks) if peaks else None


def _host_peak_rss() -> int:
  """Peak resident memory of this process in bytes (Linux reports KiB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


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
    if not config.identity.get('checkpoint', ''):
      config.identity.allow_random = True  # random weights of identity_layout(config)
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


def _num_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _fill(abstract: Any, seed: int) -> Any:
  """Seeded host arrays shaped like a ShapeDtypeStruct tree of Flax variables.

  Kernels ~ N(0, 1 / fan_in) (fan_in = product of all but the last dimension), biases
  and BatchNorm means 0, BatchNorm scales and variances 1. No compilation (the jitted
  Flax init of AEI-Net compiles for minutes on a small CPU; speed does not depend on
  the weights).
  """
  rng = np.random.default_rng(seed)

  def leaf(path, spec):
    name = jax.tree_util.keystr(path)
    shape, dtype = tuple(spec.shape), spec.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
      return np.zeros(shape, dtype)
    if name.endswith("['var']") or name.endswith("['scale']"):
      return np.ones(shape, dtype)
    if name.endswith("['mean']") or name.endswith("['bias']") or len(shape) < 2:
      return np.zeros(shape, dtype)
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)

  return jax.tree_util.tree_map_with_path(leaf, abstract)


def identity_layout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """IResNet layout {'layers', 'width', 'embedding_dim', 'bn_eps', 'stem_stride'} the config
  trains with.

  From identity.checkpoint's identity.json when set; else from the ArcFace config named by
  identity.auto_train (model.layers/width/embedding_dim over its model.arch); else the
  ARCHS entry identity.arch.
  """
  from fsjax.models import arcface  # pylint: disable=g-import-not-at-top
  ident = config.identity
  if ident.get('checkpoint', ''):
    from fsjax import identity as identity_lib  # pylint: disable=g-import-not-at-top
    meta = identity_lib.read_meta(ident.checkpoint)
    layout = {k: meta[k] for k in ('layers', 'width', 'embedding_dim', 'bn_eps')}
    return {**layout, 'stem_stride': int(meta.get('stem_stride', 1))}
  if ident.get('auto_train', ''):
    from fsjax import config_files  # pylint: disable=g-import-not-at-top
    model = config_files.load(ident.auto_train, 'ArcFace config').model
    layers, width, dim = arcface.ARCHS[model.get('arch', 'tiny')]
    return {'layers': tuple(model.get('layers') or layers),
            'width': int(model.get('width') or width),
            'embedding_dim': int(model.get('embedding_dim') or dim),
            'bn_eps': float(model.get('bn_eps', 1e-5)),
            'stem_stride': int(model.get('stem_stride', 1))}
  layers, width, dim = arcface.ARCHS[ident.arch]
  return {'layers': tuple(layers), 'width': width, 'embedding_dim': dim, 'bn_eps': 1e-5,
          'stem_stride': 1}


def bench_identity(config: ml_collections.ConfigDict, workdir: str = ''):
  """(identity module, variables) of the config's identity encoder layout (`identity_layout`).

  The configured checkpoint's weights when identity.checkpoint is set; otherwise random
  weights (an auto_train encoder is not trained for a benchmark: speed does not depend on
  the weights).
  """
  if config.identity.get('checkpoint', ''):
    from fsjax import trainer  # pylint: disable=g-import-not-at-top
    module, variables, _ = trainer.setup_identity(config, workdir)
    return module, variables
  from fsjax.models import arcface  # pylint: disable=g-import-not-at-top
  layout = identity_layout(config)
  module = arcface.IResNet(layers=tuple(layout['layers']), width=layout['width'],
                           embedding_dim=layout['embedding_dim'], bn_eps=layout['bn_eps'],
                           stem_stride=layout['stem_stride'], dtype=config.model.dtype)
  abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.float32))
  return module, _fill(abstract, int(config.seed) + 7)


def bench_state(config: ml_collections.ConfigDict, models: Any, g_tx: Any, d_tx: Any,
                mesh: jax.sharding.Mesh) -> Any:
  """A train_lib.TrainState at step 0 with random weights (`_fill`), replicated on `mesh`.

  Same structure, shapes and dtypes as trainer.init_state (checked), without compiling
  the initialisers.
  """
  from fsjax import parallel  # pylint: disable=g-import-not-at-top
  from fsjax import train_lib  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(
      lambda key: train_lib.create_train_state(config, key, models, g_tx, d_tx),
      jax.random.PRNGKey(0))
  seed = int(config.seed)
  g_params = _fill(abstract.g_params, seed)
  d_params = _fill(abstract.d_params, seed + 1)
  state = train_lib.TrainState(
      step=np.zeros((), np.int32),
      g_params=g_params,
      g_batch_stats=_fill(abstract.g_batch_stats, seed + 2),
      d_params=d_params,
      d_batch_stats=_fill(abstract.d_batch_stats, seed + 3),
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
  from fsjax import parallel  # pylint: disable=g-import-not-at-top
  from fsjax import train_lib  # pylint: disable=g-import-not-at-top

  config = bench_config(config)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  n_dev = int(mesh.devices.size)
  global_batch = int(config.per_device_batch_size) * n_dev
  result: dict[str, Any] = {
      'mode': 'train', 'framework': 'jax', 'image_size': int(config.image_size),
      'dtype': config.model.dtype, 'remat': bool(config.model.get('remat', False)),
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
  result['g_params'] = _num_params(state.g_params)
  result['d_params'] = _num_params(state.d_params)
  result['identity_params'] = _num_params(id_vars.get('params', {}))

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
    flops_dev = _cost_flops(compiled.cost_analysis())
  except Exception:  # pylint: disable=broad-except
    flops_dev = None
  try:
    flops_hlo = _cost_flops(lowered.cost_analysis())
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
      result['profile'] = summarize_trace(profile_dir)
    except Exception as e:  # pylint: disable=broad-except  # the figures matter more
      result['profile'] = f'profiling failed: {type(e).__name__}: {e}'

  result.update(timing_stats(times))
  step_s = result['step_s_median']
  result['images_per_s'] = global_batch / step_s
  result['images_per_s_per_device'] = result['images_per_s'] / n_dev
  values = {k: float(v) for k, v in jax.device_get(metrics).compute().items()}
  result['g_loss'] = values.get('g_loss')
  result['d_loss'] = values.get('d_loss')

  devices = list(mesh.devices.flat)
  result['peak_memory_bytes'] = _peak_device_memory(
      [d for d in devices if d.process_index == jax.process_index()])
  result['host_peak_rss_bytes'] = _host_peak_rss()

  platform_name = devices[0].platform
  if peak_flops is not None:
    result['peak_flops'] = float(peak_flops)
    result['peak_source'] = 'given'
  elif platform_name == 'cpu':
    result['peak_flops'] = cpu_peak_flops(config.model.dtype)
    result['peak_source'] = f'measured {config.model.dtype} 2048^3 matmul, whole host'
  else:
    per_chip = device_peak_flops(devices[0], config.model.dtype)
    result['peak_flops'] = per_chip * n_dev if per_chip else None
    result['peak_source'] = (f'datasheet dense {config.model.dtype} x {n_dev} '
                             f'({devices[0].device_kind})' if per_chip else 'unknown device')
  if result['flops_per_step'] and result.get('peak_flops'):
    result['achieved_flops'] = result['flops_per_step'] / step_s
    result['mfu'] = result['achieved_flops'] / result['peak_flops']
  else:
    result['achieved_flops'] = result['mfu'] = None
  if bandwidth is None:
    bandwidth = device_bandwidth(devices[0])  # None on CPU
  if bandwidth and result.get('peak_flops'):
    bound = jaxpr_cost.roofline(matrix_ops, result['peak_flops'] / n_dev, bandwidth)
    result['roofline'] = dict(bound, bandwidth=float(bandwidth))
    result['mfu_bound'] = bound['mfu_bound']
  return result


def _op_category(name: str, hlo_category: str = '') -> str:
  """Coarse kind of a profiled op or kernel: convolution, matmul, transpose, reduction, ..."""
  n = name.lower()
  if any(k in n for k in ('xmma', 'cudnn', 'conv')):
    return 'convolution'
  if any(k in n for k in ('gemm', 'nvjet', 'cutlass', 'dot', 'matmul', 'cublas')):
    return 'matmul'
  if 'transpose' in n:
    return 'transpose'
  if 'reduce' in n:
    return 'reduction fusion'
  if 'memcpy' in n or n.startswith('copy'):
    return 'copy'
  if 'fusion' in n:
    return 'elementwise fusion'
  return hlo_category or 'other'


def summarize_trace(profile_dir: str, top: int = 25) -> dict[str, Any]:
  """Where the time of a jax.profiler trace went (newest .xplane.pb under profile_dir).

  Device planes (GPU/TPU) are read from their 'XLA Ops' line (else their stream lines);
  on CPU, the events of XLA's thunks on the host threads (those with an 'hlo_op' stat).

  Returns:
    {'ops': up to `top` dicts {'name', 'total_ms', 'count', 'share', 'source'} sorted by
    time (share of the summed op time; source = the op's JAX origin or HLO text when the
    trace has it), 'categories': {category: share} (`_op_category` of each op or kernel
    name: convolution, matmul, transpose, reduction fusion, elementwise fusion, copy,
    other), 'total_ms': summed op time}.
  """
  import glob  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(profile_dir, '**', '*.xplane.pb'), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    return {'ops': [], 'categories': {}, 'total_ms': 0.0}
  data = jax.profiler.ProfileData.from_file(paths[-1])
  totals: dict[str, list] = {}
  categories: dict[str, float] = {}

  def add(lines, need_hlo_stat):
    for line in lines:
      for event in line.events:
        stats = {}
        for key, value in event.stats:
          stats.setdefault(key, value)
        if need_hlo_stat and 'hlo_op' not in stats:
          continue
        ms = event.duration_ns / 1e6
        entry = totals.setdefault(event.name, [0.0, 0, ''])
        entry[0] += ms
        entry[1] += 1
        if not entry[2]:
          entry[2] = str(stats.get('tf_op') or stats.get('long_name') or '')[:200]
        cat = _op_category(event.name, str(stats.get('hlo_category') or ''))
        categories[cat] = categories.get(cat, 0.0) + ms

  device_planes = [p for p in data.planes if p.name.startswith('/device:')]
  for plane in device_planes:
    lines = list(plane.lines)
    ops = [l for l in lines if l.name == 'XLA Ops']
    add(ops or [l for l in lines if l.name.startswith('Stream')], False)
  if not device_planes:
    add([l for p in data.planes if p.name.startswith('/host:CPU') for l in p.lines], True)
  whole = sum(v[0] for v in totals.values()) or 1.0
  rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
  return {
      'ops': [{'name': k, 'total_ms': v[0], 'count': v[1], 'share': v[0] / whole,
               'source': v[2]} for k, v in rows],
      'categories': dict(sorted(((k, v / whole) for k, v in categories.items()),
                                key=lambda kv: -kv[1])[:15]),
      'total_ms': whole}


def bench_swap(config: ml_collections.ConfigDict, *, batches: tuple[int, ...] = (1, 32),
               repeats: int = 3, end_to_end: bool = True) -> dict[str, Any]:
  """Swap throughput of a random-weight Swapper of the config's sizes (fsjax.swapper).

  Args:
    config: training config (image_size, model.*, identity.arch, dataset.alignment).
    batches: faces per model call / frames per end-to-end call.
    repeats: timed model calls per batch size.
    end_to_end: also time detection + alignment + model + paste-back (one call per batch).
  Returns:
    {'mode': 'swap', 'rows': [per batch: model_swaps_per_s, end_to_end_swaps_per_s,
    detect_ms_per_frame], ...} with 'swap_b<B>_model_per_s' etc. flattened too.
  """
  from fsjax import swapper as swapper_lib  # pylint: disable=g-import-not-at-top
  config = bench_config(config)
  result: dict[str, Any] = {'mode': 'swap', 'framework': 'jax',
                            'image_size': int(config.image_size), 'dtype': config.model.dtype}
  t0 = time.perf_counter()
  swapper = swapper_lib.random_swapper(config, batch_size=max(batches))
  result['setup_s'] = time.perf_counter() - t0
  rows = []
  for b in batches:
    figures = swapper_lib.measure_swap(swapper, int(b), repeats=repeats,
                                       end_to_end_repeats=1 if end_to_end else 0)
    rows.append(figures)
    result[f'swap_b{b}_model_per_s'] = figures['model_swaps_per_s']
    if 'end_to_end_swaps_per_s' in figures:
      result[f'swap_b{b}_end_to_end_per_s'] = figures['end_to_end_swaps_per_s']
    result[f'swap_b{b}_detect_ms_per_frame'] = figures['detect_ms_per_frame']
  result['rows'] = rows
  return result


def synthetic_source(config: ml_collections.ConfigDict, num_identities: int = 32,
                     per_identity: int = 4, seed: int = 0):
  """InMemorySource of PNG-encoded smooth noise 'faces' at image_size (decoded on every read)."""
  from fsjax import input_pipeline  # pylint: disable=g-import-not-at-top
  s = int(config.image_size)
  rs = np.random.RandomState(seed)
  n = num_identities * per_identity
  coarse = rs.randint(0, 256, (n, 8, 8, 3)).astype(np.float32)
  images = np.repeat(np.repeat(coarse, -(-s // 8), axis=1), -(-s // 8), axis=2)[:, :s, :s]
  images = np.clip(images + rs.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
  labels = np.repeat(np.arange(num_identities), per_identity)
  return input_pipeline.InMemorySource(images, labels, encode_png=True)


def bench_data(config: ml_collections.ConfigDict, *, num_batches: int = 20,
               source: str = 'auto', train_result: dict | None = None) -> dict[str, Any]:
  """Pairs/s from the grain pair pipeline, against what the training step consumes.

  Args:
    config: training config (dataset.*, per_device_batch_size, image_size).
    num_batches: timed batches (after 2 warm-up batches).
    source: 'tfds' (config.dataset, must be prepared), 'memory' (PNG-encoded synthetic
      records of the configured size, decoded per read as TFDS does), or 'auto' (tfds when
      prepared, else memory).
    train_result: a `bench_train` result; its images_per_s is the consumption rate.
  Returns:
    {'pairs_per_s', 'source', 'train_pairs_per_s', 'headroom' (pipeline / train), ...};
    one pair is one training row (two images decoded).
  """
  from fsjax import input_pipeline  # pylint: disable=g-import-not-at-top
  config = bench_config(config)
  data_source, used = None, source
  if source in ('auto', 'tfds'):
    try:
      data_source = input_pipeline.create_data_source(config.dataset,
                                                      config.dataset.get('split', 'train'))
      used = f'tfds:{config.dataset.name}'
    except Exception as e:  # pylint: disable=broad-except
      if source == 'tfds':
        raise
      logging.info('dataset %s not available (%s); using synthetic PNG records',
                   config.dataset.name, str(e).splitlines()[0])
  if data_source is None:
    data_source = synthetic_source(config)
    used = 'memory:synthetic_png'
  pairs_per_s = input_pipeline.measure_pipeline(config, data_source, int(num_batches))
  result: dict[str, Any] = {
      'mode': 'data', 'framework': 'grain', 'image_size': int(config.image_size),
      'source': used, 'num_workers': int(config.dataset.get('num_workers', 0)),
      'local_batch_size': input_pipeline.local_batch_size(config),
      'num_batches': int(num_batches), 'pairs_per_s': pairs_per_s,
      'images_decoded_per_s': 2 * pairs_per_s}
  if train_result and train_result.get('images_per_s'):
    # The step consumes global_batch pairs; this host feeds its share.
    share = jax.local_device_count() / max(jax.device_count(), 1)
    result['train_pairs_per_s'] = float(train_result['images_per_s']) * share
    result['headroom'] = pairs_per_s / result['train_pairs_per_s']
  return result


def compare(jax_result: dict[str, Any], torch_results: list[dict[str, Any]]) -> dict[str, Any]:
  """Ratios of JAX images/s to each PyTorch variant's ('jax_over_<variant>')."""
  out = {}
  for r in torch_results:
    if r.get('images_per_s'):
      out[f"jax_over_{r['variant']}"] = jax_result['images_per_s'] / r['images_per_s']
  return out


def format_table(results: list[dict[str, Any]]) -> str:
  """A plain-text table of the headline figures of train / swap / data results."""
  lines = []
  train = [r for r in results if r.get('mode') == 'train']
  if train:
    head = (f"{'framework':<22}{'batch':>6}{'dtype':>10}{'img/s':>10}{'img/s/dev':>10}"
            f"{'step ms':>10}{'p90 ms':>9}{'compile s':>10}{'GFLOP/step':>12}{'MFU %':>7}"
            f"{'peak MiB':>10}")
    lines += [head, '-' * len(head)]
    for r in train:
      name = r['framework'] + (f"/{r['variant']}" if r.get('variant') else '')
      mem = r.get('peak_memory_bytes') or r.get('host_peak_rss_bytes')
      lines.append(
          f"{name:<22}{r['global_batch_size']:>6}{r['dtype']:>10}{r['images_per_s']:>10.2f}"
          f"{r['images_per_s_per_device']:>10.2f}{1e3 * r['step_s_median']:>10.1f}"
          f"{1e3 * r['step_s_p90']:>9.1f}"
          + (f"{r['compile_s']:>10.1f}" if r.get('compile_s') is not None else f"{'-':>10}")
          + (f"{r['flops_per_step'] / 1e9:>12.2f}" if r.get('flops_per_step') else f"{'-':>12}")
          + (f"{100 * r['mfu']:>7.1f}" if r.get('mfu') else f"{'-':>7}")
          + (f"{mem / 2**20:>10.0f}" if mem else f"{'-':>10}"))
  for r in train:
    roof = r.get('roofline')
    if roof:
      lines.append(
          f"roofline ({r['framework']}, one device): step >= {1e3 * roof['step_s']:.1f} ms at "
          f"{r['peak_flops'] / r['num_devices'] / 1e12:.4g} TFLOP/s and "
          f"{roof['bandwidth'] / 1e12:.2f} TB/s ({1e3 * roof['memory_bound_s']:.1f} ms of it "
          f"bandwidth-bound), so MFU <= {100 * roof['mfu_bound']:.1f}% "
          f"({100 * roof['mfu_bound_own']:.1f}% counting only the ops' own operands)")
  for r in train:
    prof = r.get('profile')
    if isinstance(prof, dict) and prof.get('ops'):
      lines.append(f"profile ({r['profile_dir']}), op time by category: " + ', '.join(
          f'{k} {100 * v:.0f}%' for k, v in list(prof['categories'].items())[:8]))
      for op in prof['ops'][:12]:
        lines.append(f"  {100 * op['share']:5.1f}% {op['total_ms']:10.2f} ms  x{op['count']:<5}"
                     f" {op['name'][:40]:<40} {op['source'][-60:]}")
  for r in results:
    if r.get('mode') == 'compare':
      for k, v in r.items():
        if k.startswith('jax_over_'):
          lines.append(f"ratio {k.replace('_', ' ')}: {v:.2f}x (images/s)")
  for r in results:
    if r.get('mode') == 'swap':
      lines.append('')
      lines.append(f"{'swap batch':<12}{'model swaps/s':>15}{'end-to-end swaps/s':>20}"
                   f"{'detect ms/frame':>17}")
      for row in r['rows']:
        e2e = row.get('end_to_end_swaps_per_s')
        lines.append(f"{row['batch']:<12}{row['model_swaps_per_s']:>15.2f}"
                     + (f'{e2e:>20.2f}' if e2e else f"{'-':>20}")
                     + f"{row['detect_ms_per_frame']:>17.1f}")
    if r.get('mode') == 'data':
      lines.append('')
      line = (f"data ({r['source']}, {r['num_workers']} workers, batch "
              f"{r['local_batch_size']}): {r['pairs_per_s']:.1f} pairs/s")
      if r.get('train_pairs_per_s'):
        line += (f"; train step consumes {r['train_pairs_per_s']:.1f} pairs/s "
                 f"(headroom {r['headroom']:.2f}x)")
      lines.append(line)
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, modes: list[str], *, steps: int = 10,
        warmup: int = 2, compare_torch: bool = False, torch_compile: bool = False,
        torch_channels_last: bool = False, swap_batches: tuple[int, ...] = (1, 32),
        data_batches: int = 20, data_source: str = 'auto', profile_dir: str | None = None,
        train_json: str | None = None, json_path: str | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the requested modes in one process; the command's library entry point.

  Args:
    config: training config (already overridden by the caller).
    modes: subset of ['train', 'swap', 'data'] (order kept).
    steps, warmup: timed and untimed training steps (both frameworks).
    compare_torch: also time the PyTorch reference step (eager).
    torch_compile: also time it under torch.compile.
    torch_channels_last: also time PyTorch eager with channels_last tensors.
    swap_batches: batch sizes of the swap mode.
    data_batches: timed batches of the data mode.
    data_source: 'auto' | 'tfds' | 'memory' (see bench_data).
    profile_dir: jax.profiler trace of the train step there.
    train_json: a previous train result JSON to take the consumption rate from (data mode
      without a train run).
    json_path: if set, the results so far are written there after each measurement (a run
      cut short by a time limit keeps what it measured).
    log: progress printer.
  Returns:
    {'environment': ..., 'results': [dicts], 'table': str}.
  """
  import json  # pylint: disable=g-import-not-at-top
  env = environment()

  class _Results(list):
    """A list that writes the results so far to json_path on every append."""

    def append(self, item):
      super().append(item)
      if json_path:
        with open(json_path, 'w') as f:
          json.dump({'environment': env, 'results': list(self), 'partial': True}, f,
                    indent=1, default=str)

  results: list[dict[str, Any]] = _Results()
  train_result = None
  for mode in modes:
    if mode == 'train':
      log(f'[bench] train: jax, {config.image_size}px, batch {config.per_device_batch_size}'
          f'/device, {config.model.dtype}')
      train_result = bench_train(config, steps=steps, warmup=warmup, profile_dir=profile_dir)
      results.append(train_result)
      log(f"[bench]   {train_result['images_per_s']:.2f} images/s")
      if compare_torch or torch_compile or torch_channels_last:
        from fsjax import bench_torch  # pylint: disable=g-import-not-at-top
        variants = []
        if compare_torch:
          variants.append('eager')
        if torch_channels_last:
          variants.append('eager_channels_last')
        if torch_compile:
          variants.append('compile')
        torch_results = []
        for variant in variants:
          log(f'[bench] train: torch {variant}')
          on_cpu = jax.devices()[0].platform == 'cpu'
          fn = (bench_torch.bench_train_torch_subprocess if on_cpu
                else bench_torch.bench_train_torch)
          r = fn(config, batch_size=train_result['global_batch_size'], steps=steps,
                 warmup=warmup, variant=variant)
          # Same architecture and batch: the JAX step's model FLOP count applies.
          if train_result.get('flops_per_step') and train_result.get('peak_flops'):
            r['flops_per_step'] = train_result['flops_per_step']
            r['flops_source'] = 'model FLOPs of the JAX step (jaxpr_cost.jaxpr_flops)'
            r['peak_flops'] = train_result['peak_flops'] / train_result['num_devices']
            r['mfu'] = r['flops_per_step'] / r['step_s_median'] / r['peak_flops']
          log(f"[bench]   {r['images_per_s']:.2f} images/s")
          torch_results.append(r)
          results.append(r)
        results.append(dict(mode='compare', **compare(train_result, torch_results)))
    elif mode == 'swap':
      log(f'[bench] swap: batches {swap_batches}')
      results.append(bench_swap(config, batches=swap_batches))
    elif mode == 'data':
      if train_result is None and train_json:
        with open(train_json) as f:
          previous = json.load(f)
        train_result = next((r for r in previous.get('results', [])
                             if r.get('mode') == 'train' and r.get('framework') == 'jax'), None)
      log('[bench] data')
      results.append(bench_data(config, num_batches=data_batches, source=data_source,
                                train_result=train_result))
    else:
      raise ValueError(f"unknown bench mode {mode!r}; expected train, swap or data")
  env['load_avg_1m_end'] = load_average()
  return {'environment': env, 'results': list(results), 'table': format_table(results)}
