"""FLOPs and memory traffic of a traced JAX program: model FLOPs for MFU, and a roofline bound.

`matrix_ops` lists the convolutions and matrix products of a jaxpr (sub-jaxprs inlined)
with their FLOPs and the bytes each must move through device memory. `roofline` turns
that list into a lower bound on the step time of a device with a given peak FLOP/s and
memory bandwidth, and so an upper bound on the MFU any schedule of this program can reach
when convolutions are library calls (cuDNN, XLA:TPU convolution emitters) whose operands
and results live in device memory:

  bytes(op) = its operands read + its result written
              + one write of each operand that non-matrix work produced
              + one read of its result where non-matrix work consumes it
  step >= sum over ops of max(FLOPs(op) / peak, bytes(op) / bandwidth)

Everything else (normalisation, activations, losses, optimizer) is assumed fused into
those round trips at no cost, so the bound is optimistic: a reduction such as an
instance norm's statistics, which needs its own pass over a tensor, only adds to it. Where
the compiler fuses elementwise producers and consumers into the convolution itself
(XLA:TPU), the neighbour terms can vanish: `roofline` also gives the bound without them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

MATRIX_PRIMITIVES = ('conv_general_dilated', 'dot_general')
# Primitives whose single sub-jaxpr takes the equation's operands one to one: inlined,
# so a convolution inside a jit, custom_vjp or shard_map body sees its real producer.
_INLINED = ('jit', 'pjit', 'closed_call', 'core_call', 'custom_jvp_call', 'custom_vjp_call',
            'checkpoint', 'remat', 'shard_map')


@dataclasses.dataclass
class MatrixOp:
  """One convolution or matrix product: its FLOPs and device-memory bytes, per execution x count."""
  primitive: str
  shapes: tuple[tuple[int, ...], ...]  # operand shapes, then the result's
  dtype: str  # result dtype
  flops: float
  bytes: float  # operands read + result written
  neighbour_bytes: float = 0.0  # producer writes of operands, consumer reads of the result

  @property
  def total_bytes(self) -> float:
    return self.bytes + self.neighbour_bytes


def conv_flops(eqn) -> float:
  """2 x multiply-adds of a conv_general_dilated; taps on lhs-dilation holes are not counted."""
  out = eqn.outvars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  dn = eqn.params['dimension_numbers']
  rhs_spec = dn.rhs_spec  # (out feature dim, in feature dim, *spatial dims)
  window = float(np.prod([rhs[d] for d in rhs_spec[2:]]))
  holes = float(np.prod(eqn.params.get('lhs_dilation') or (1,)))
  return 2.0 * float(np.prod(out)) * window * rhs[rhs_spec[1]] / holes


def dot_flops(eqn) -> float:
  """2 x multiply-adds of a dot_general: 2 * prod(lhs shape) * prod(rhs free dims)."""
  lhs = eqn.invars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  (_, rhs_contract), (_, rhs_batch) = eqn.params['dimension_numbers']
  free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return 2.0 * float(np.prod(lhs)) * float(np.prod(free))


def _nbytes(var) -> int:
  aval = getattr(var, 'aval', None)
  try:
    return int(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize
  except (AttributeError, TypeError):  # literals' avals are fine; PRNG key types have none
    return 0


def _sub_jaxprs(eqn) -> list[tuple[str, Any]]:
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
  kinds = (jex_core.Jaxpr, jex_core.ClosedJaxpr)
  found = []
  for key, value in eqn.params.items():
    if isinstance(value, kinds):
      found.append((key, value))
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, kinds) for v in value):
      found.extend((key, v) for v in value)
  return found


def _open(jaxpr):
  return getattr(jaxpr, 'jaxpr', jaxpr)


class _Walker:
  """Flattens a jaxpr into matrix ops, tracking which kind of equation produced each value."""

  def __init__(self):
    self.scopes = 0  # one per walked body: a jit body used at two call sites has one set of Vars
    self.ops: list[MatrixOp] = []
    # value -> (the MatrixOp that produced it, or None for other work; its bytes x count)
    self.produced: dict[Any, tuple[MatrixOp | None, float]] = {}
    self.first_matrix_reader: dict[Any, MatrixOp] = {}
    self.read_by_other: set[Any] = set()

  def walk(self, jaxpr, env: dict[Any, Any], mult: float) -> list[Any]:
    """Walks `jaxpr` with its invars bound to `env`'s values; returns its outvars' values.

    A value is the key (scope, Var) of the body that defined it.
    """
    from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
    jaxpr = _open(jaxpr)
    self.scopes += 1
    scope = self.scopes

    def value(v):
      if isinstance(v, jex_core.Literal):
        return None
      return env[v] if v in env else (scope, v)

    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      ins = [value(v) for v in eqn.invars]
      subs = _sub_jaxprs(eqn)
      if name in MATRIX_PRIMITIVES:
        flops = conv_flops(eqn) if name == 'conv_general_dilated' else dot_flops(eqn)
        op = MatrixOp(name, tuple(tuple(v.aval.shape) for v in list(eqn.invars) + eqn.outvars),
                      str(eqn.outvars[0].aval.dtype), flops * mult,
                      (sum(_nbytes(v) for v in eqn.invars) + _nbytes(eqn.outvars[0])) * mult)
        self.ops.append(op)
        for v in ins:
          if v is not None:
            self.first_matrix_reader.setdefault(v, op)
        self.produced[value(eqn.outvars[0])] = (op, _nbytes(eqn.outvars[0]) * mult)
        continue
      if (name in _INLINED and len(subs) == 1
          and len(_open(subs[0][1]).invars) == len(eqn.invars)):
        inner = _open(subs[0][1])
        outs = self.walk(inner, dict(zip(inner.invars, ins)), mult)
        for outer, res in zip(eqn.outvars, outs):
          env[outer] = res
        continue
      for v in ins:
        if v is not None:
          self.read_by_other.add(v)
      if subs:  # cond (costliest branch), scan (x length), while (one iteration), others
        if name == 'cond':
          self.ops.extend(max((_Walker.flatten(j, mult) for _, j in subs),
                              key=lambda ops: sum(o.flops for o in ops)))
        else:
          inner_mult = mult * (int(eqn.params.get('length', 1)) if name == 'scan' else 1)
          for _, j in subs:
            self.ops.extend(_Walker.flatten(j, inner_mult))
      for out in eqn.outvars:
        self.produced[value(out)] = (None, _nbytes(out) * mult)
    outs = [value(v) for v in jaxpr.outvars]
    return outs

  @staticmethod
  def flatten(jaxpr, mult: float = 1.0) -> list[MatrixOp]:
    """Matrix ops of a self-contained jaxpr (its inputs come from outside, unattributed)."""
    walker = _Walker()
    outs = walker.walk(jaxpr, {}, mult)
    walker.read_by_other.update(v for v in outs if v is not None)
    walker.attribute()
    return walker.ops

  def attribute(self):
    """Adds the neighbour traffic: producer writes of operands, consumer reads of results."""
    for v, reader in self.first_matrix_reader.items():
      if v in self.produced and self.produced[v][0] is None:
        reader.neighbour_bytes += self.produced[v][1]
    for v in self.read_by_other:
      producer, size = self.produced.get(v, (None, 0.0))
      if producer is not None:
        producer.neighbour_bytes += size


def matrix_ops(jaxpr: Any) -> list[MatrixOp]:
  """The convolutions and matrix products of a (closed) jaxpr with FLOPs and bytes.

  Sub-jaxprs of jit, custom_vjp/jvp, remat and shard_map are inlined (inside shard_map the
  shapes are one device's); cond counts its costliest branch, scan its body times its
  length, while loops one iteration.
  """
  return _Walker.flatten(jaxpr)


def jaxpr_flops(jaxpr: Any) -> float:
  """Matrix FLOPs (convolutions and dot products) of a jaxpr, sub-jaxprs included.

  Model FLOPs in the MFU sense: the arithmetic of the network's convolutions and matrix
  products (forward and backward as traced), independent of the backend (XLA's GPU cost
  analysis does not count cuDNN convolution calls). See `matrix_ops` for sub-jaxprs.
  """
  return float(sum(op.flops for op in matrix_ops(jaxpr)))


def roofline(ops: list[MatrixOp], peak_flops: float, bandwidth: float) -> dict[str, float]:
  """Lower bound on the time of `ops` on one device, and the MFU bound it implies.

  Args:
    ops: from `matrix_ops` (one device's program).
    peak_flops: the device's peak FLOP/s for the ops' dtype.
    bandwidth: the device's memory bandwidth in bytes/s.
  Returns:
    {'flops', 'bytes' (with the neighbour traffic), 'compute_s' (FLOPs / peak),
     'step_s' (sum over ops of max(FLOPs / peak, bytes / bandwidth)), 'memory_bound_s' (the
     part of step_s spent in ops limited by bandwidth), 'mfu_bound' (compute_s / step_s),
     and 'step_s_own', 'mfu_bound_own': the same counting only each op's own operands and
     result, a bound even where its neighbours fuse into it (XLA:TPU convolution fusions)}.
  """
  flops = sum(op.flops for op in ops)
  compute_s = flops / peak_flops

  def step(traffic):
    times = [(op.flops / peak_flops, traffic(op) / bandwidth) for op in ops]
    return sum(max(c, m) for c, m in times), sum(m for c, m in times if m > c)

  step_s, memory_bound_s = step(lambda op: op.total_bytes)
  step_s_own, _ = step(lambda op: op.bytes)
  return {'flops': float(flops), 'bytes': float(sum(op.total_bytes for op in ops)),
          'compute_s': float(compute_s), 'step_s': float(step_s),
          'memory_bound_s': float(memory_bound_s),
          'mfu_bound': float(compute_s / step_s) if step_s else 0.0,
          'step_s_own': float(step_s_own),
          'mfu_bound_own': float(compute_s / step_s_own) if step_s_own else 0.0}
