"""Where a profiled step's time went: a jax.profiler trace summarised by op kind."""

from __future__ import annotations

import os
from typing import Any

import jax


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
