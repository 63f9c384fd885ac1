"""Throughput benchmarks: the compiled training step, the swap and the input pipeline.

Three modes, each returning a flat dict of figures (the `fsjax bench` command prints them
as a table and writes them as JSON):

  * `bench_train`: the real training step of fsjax.aei.train_lib (generator and
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

The PyTorch baseline of the same training step lives in fsjax.bench.torch_baseline
(`--compare_torch`); `compare` puts both side by side.

Figures depend on the machine's load: on a shared CPU, read them with the load average
recorded in the result ('load_avg_1m').
"""

from __future__ import annotations

import json
from typing import Any, Callable

import jax
import ml_collections

from fsjax.bench import data as bench_data_lib
from fsjax.bench import machine
from fsjax.bench import swap as bench_swap_lib
from fsjax.bench import train as bench_train_lib


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
  env = machine.environment()

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
      train_result = bench_train_lib.bench_train(config, steps=steps, warmup=warmup, profile_dir=profile_dir)
      results.append(train_result)
      log(f"[bench]   {train_result['images_per_s']:.2f} images/s")
      if compare_torch or torch_compile or torch_channels_last:
        from fsjax.bench import torch_baseline as bench_torch  # pylint: disable=g-import-not-at-top
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
      results.append(bench_swap_lib.bench_swap(config, batches=swap_batches))
    elif mode == 'data':
      if train_result is None and train_json:
        with open(train_json) as f:
          previous = json.load(f)
        train_result = next((r for r in previous.get('results', [])
                             if r.get('mode') == 'train' and r.get('framework') == 'jax'), None)
      log('[bench] data')
      results.append(bench_data_lib.bench_data(config, num_batches=data_batches, source=data_source,
                                train_result=train_result))
    else:
      raise ValueError(f"unknown bench mode {mode!r}; expected train, swap or data")
  env['load_avg_1m_end'] = machine.load_average()
  return {'environment': env, 'results': list(results), 'table': format_table(results)}
