"""Facts about the machine a benchmark runs on: chip peaks, measured CPU peak, environment,
memory high-water marks, and timing statistics."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
      return 1e12 * (bf16 if is_bf16(dtype) else fp32), 1e12 * tbps
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


def is_bf16(dtype: Any) -> bool:
  return str(dtype).lower() in ('bfloat16', 'bf16', "<class 'jax.numpy.bfloat16'>")


def cpu_peak_flops(dtype: str = 'float32', n: int = 2048, repeats: int = 5) -> float:
  """Measured FLOP/s of this host's CPUs: best of `repeats` [n, n] x [n, n] products.

  XLA runs the product on its intra-op thread pool (all cores), so this is the
  whole-host figure the CPU MFU is relative to.
  """
  dt = jnp.bfloat16 if is_bf16(dtype) else jnp.float32
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


def cost_flops(cost: Any) -> float | None:
  """'flops' from a (compiled or lowered) cost analysis: a dict, or a list of dicts."""
  if cost is None:
    return None
  if isinstance(cost, (list, tuple)):
    vals = [cost_flops(c) for c in cost]
    vals = [v for v in vals if v]
    return float(sum(vals)) if vals else None
  flops = cost.get('flops') if hasattr(cost, 'get') else None
  return float(flops) if flops and flops > 0 else None


def peak_device_memory(devices) -> int | None:
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


def host_peak_rss() -> int:
  """Peak resident memory of this process in bytes (Linux reports KiB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
