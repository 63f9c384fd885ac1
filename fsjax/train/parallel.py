"""Data parallelism over every device of every host: process start-up, the mesh, sharding.

One 1-D mesh with axis 'data' spans all devices of all processes. A training step
is written per device (it sees its slice of the batch and uses `lax.pmean(...,
'data')`) and compiled with `data_parallel` = `jax.jit(jax.shard_map(...))`.
Host batches (each process holds its own rows) become global arrays with
`shard_batch`; replicated values (parameters, optimizer state) with `replicate`.

Multi-host start-up (`initialize_distributed`), before anything touches a device:
  * TPU pods (and SLURM jobs with several tasks): auto-detected, plain
    `jax.distributed.initialize()`.
  * GPU clusters: explicit coordinator address ('host:port' of process 0), number
    of processes and this process's id (the `fsjax train` flags).
  * CPU (tests, two processes on loopback): the same explicit flags; gloo
    collectives are switched on so a psum crosses processes.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def _auto_detect() -> bool:
  """True when this process looks like one task of a multi-host job JAX can auto-configure."""
  if os.environ.get('FSJAX_NO_DISTRIBUTED'):
    return False
  on_tpu_vm = (importlib.util.find_spec('libtpu') is not None
               and bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*')))
  if on_tpu_vm:
    return True
  for var in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if int(os.environ.get(var, '1') or 1) > 1:
      return True
  return False


def initialize_distributed(coordinator_address: str = '', num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Connects this process to the others of a multi-host job (call once, first).

  Args:
    coordinator_address: 'host:port' of process 0's coordinator; '' = auto-detect
      (TPU pod, SLURM, Open MPI) or single process.
    num_processes: number of processes (with coordinator_address).
    process_id: this process, in [0, num_processes) (with coordinator_address).
  Returns:
    True when jax.distributed was initialised (multi-process or TPU VM), False
    for a plain single-process run.
  Raises:
    ValueError: a coordinator without num_processes / process_id.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and --process_id')
    # Only affects the CPU backend (two CPU processes on loopback in tests).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address, num_processes=int(num_processes),
                               process_id=int(process_id))
  elif num_processes not in (None, 1) or process_id not in (None, 0):
    raise ValueError('--num_processes/--process_id need --coordinator_address')
  elif _auto_detect():
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize()
  else:
    return False
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def barrier(name: str, timeout_s: int = 3600) -> None:
  """Waits until every process reaches `barrier(name)` (coordination service; no-op alone).

  Unlike a device collective (whose CPU/gloo rendezvous gives up after 30 s), this
  tolerates hosts that are minutes apart, e.g. one compiling while another loaded
  the program from a compilation cache. `name` must be unique per call site and use.
  """
  if jax.process_count() == 1:
    return
  from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
  multihost.sync_global_processes(name, timeout=int(timeout_s),
                                  processes=set(range(jax.process_count())))


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Returns the 1-D mesh ('data',) over `devices` (default: all devices of all hosts).

  Devices are ordered by (process, id), so each process's devices are one
  contiguous block of the axis and `shard_batch` needs no cross-host copy.
  """
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """The same full value on every device."""
  return NamedSharding(mesh, P())


def local_batch_size(mesh: Mesh | None, per_device_batch_size: int) -> int:
  """Rows this process feeds: per_device_batch_size * (this process's devices in `mesh`;
  None = the mesh of every device, `make_mesh()`)."""
  if mesh is None:
    return int(per_device_batch_size) * jax.local_device_count()
  local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  return int(per_device_batch_size) * local


def shard_batch(host_batch: Any, mesh: Mesh) -> Any:
  """Host-local numpy batch -> global jax.Arrays split over 'data' (leading axis).

  Args:
    host_batch: pytree of numpy arrays [B_local, ...]; B_local = per-device batch x
      this process's devices in `mesh`; every process passes its own rows.
    mesh: the data mesh.
  Returns:
    The same pytree of jax.Arrays [B_global, ...] with NamedSharding P('data');
    B_global = B_local * process_count (the processes' rows, in process order).
  """
  sharding = data_sharding(mesh)
  num_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  num_global = mesh.devices.size

  def put(x):
    x = np.asarray(x)
    if x.shape[0] % num_local:
      raise ValueError(f'host batch of {x.shape[0]} rows does not split over '
                       f'{num_local} local devices')
    global_shape = (x.shape[0] // num_local * num_global,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree.map(put, host_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf (numpy or jax, the same value on every process) on all devices of `mesh`.

  Identical values on every host are required (e.g. parameters initialised from the
  same seed, or restored from the same checkpoint).
  """
  sharding = replicated_sharding(mesh)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if isinstance(x, jax.Array) and (jax.process_count() == 1 or not x.is_fully_addressable):
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def data_parallel(fn: Callable[..., Any], mesh: Mesh, in_specs: Any, out_specs: Any,
                  donate_argnums: int | Sequence[int] = ()) -> Callable[..., Any]:
  """Compiles a per-device function over `mesh`: jax.jit(jax.shard_map(fn, ...)).

  Inside `fn`, arrays with spec P('data') are the device's slice and collectives
  over 'data' (`lax.pmean`, `lax.psum`) reach every device of every host. The
  arguments must already carry matching shardings (`shard_batch`, `replicate`).
  Replication is checked (check_vma): an output declared P() must be made
  identical across devices (e.g. by a pmean), else tracing fails.

  Args:
    fn: per-device function.
    mesh: the data mesh.
    in_specs: PartitionSpec pytree prefix of the arguments (P() replicated,
      P('data') split on the leading axis).
    out_specs: PartitionSpec pytree prefix of the outputs.
    donate_argnums: arguments whose buffers the outputs reuse (the train state).
  """
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
  return jax.jit(mapped, donate_argnums=donate_argnums)
