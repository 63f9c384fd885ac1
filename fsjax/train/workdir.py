"""A trainer's run directory: checked before anything is created, then created and locked.

`check(workdir)` says why a folder cannot hold a run (a file, read-only, full) without
creating anything. `acquire(workdir)` creates it and takes its lock, WORKDIR/fsjax.lock: an
exclusive flock held for the whole run (the kernel releases it when the process dies, even
by kill -9) on a file that names the holder, `{"host": ..., "pid": ...}`, for the message a
second run gets. A lock file left by a process that is gone (kill -9) is taken over with a
warning; one left by another host is not (its run may be alive where this host cannot see).
Multi-host runs: only the writing process (process 0) takes the lock, so the other hosts
never wait on it.
"""

import errno
import fcntl
import json
import logging
import os
import socket
from typing import Optional

from fsjax.data import paths

LOCK_FILE = 'fsjax.lock'
MIN_FREE_BYTES = 16 << 20  # below this the file system counts as full


class WorkdirError(RuntimeError):
  """A workdir a run cannot use (the message says why and what to do)."""


class WorkdirInUse(WorkdirError):
  """Another run holds the workdir's lock."""


def check(workdir: str) -> str:
  """The absolute workdir when a run can create and write it; creates nothing.

  Raises:
    WorkdirError: it (or a parent) is a file, or it would be on a read-only or full file
      system, or its nearest existing folder is not writable.
  """
  path = paths.absolute(workdir)
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = 'is a file' if existing == path else f'lies under the file {existing}'
    raise WorkdirError(f'workdir {path} {what}, not a folder: give another --workdir')
  try:
    stat = os.statvfs(existing)
  except OSError as e:
    raise WorkdirError(f'workdir {path}: cannot read its file system ({e.strerror})') from None
  if stat.f_flag & os.ST_RDONLY:
    raise WorkdirError(f'workdir {path} is on a read-only file system: give a --workdir on a '
                       'writable disk')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WorkdirError(f'workdir {path}: {existing} is not writable by this user')
  free = stat.f_bavail * stat.f_frsize
  if free < MIN_FREE_BYTES:
    raise WorkdirError(f'workdir {path}: its file system is full ({free >> 20} MiB free); free '
                       'some space or give a --workdir on another disk')
  return path


class Lock:
  """The held lock of a workdir (`release()` or use as a context manager)."""

  def __init__(self, path: Optional[str], fd: Optional[int]):
    self.path, self._fd = path, fd

  def release(self) -> None:
    if self._fd is None:
      return
    try:  # removed before it is unlocked: a run that opened it meanwhile sees a stale inode
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> 'Lock':
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _holder(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    holder = json.loads(os.read(fd, 4096).decode() or '{}')
  except (ValueError, UnicodeDecodeError):
    return {}
  return holder if isinstance(holder, dict) else {}


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _take(workdir: str) -> Lock:
  path = os.path.join(workdir, LOCK_FILE)
  host = socket.gethostname()
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      raise WorkdirInUse(f'workdir {workdir} is in use by PID {holder.get("pid", "?")} on '
                         f'{holder.get("host", "?")}') from None
    try:
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)  # the holder released (unlinked) it between our open and flock: retry
  holder = _holder(fd)
  if holder.get('host', host) != host:
    os.close(fd)  # the file stays: it is that host's lock
    raise WorkdirInUse(f'workdir {workdir} is in use by PID {holder.get("pid", "?")} on '
                       f'{holder["host"]} (if that run has ended, delete {path})')
  if holder:
    state = 'alive but not holding it' if _alive(int(holder.get('pid', 0))) else 'not running'
    logging.warning('workdir %s: taking over the stale lock of PID %s on %s (%s)', workdir,
                    holder.get('pid'), host, state)
  lock = Lock(path, fd)
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({'host': host, 'pid': os.getpid()}).encode(), 0)
    os.fsync(fd)
  except OSError:
    lock.release()  # e.g. a full disk
    raise
  return lock


def acquire(workdir: str, *, chief: bool = True) -> Lock:
  """Creates `workdir` and locks it for this run (`chief`: the writing process; the other
  processes of a multi-host run only create the folder and hold nothing).

  Raises:
    WorkdirInUse: 'workdir W is in use by PID N on HOST'.
    WorkdirError: see `check`, or the folder or the lock file cannot be written (the folders
      this call created are removed again).
  """
  path = check(workdir)
  created = []
  parent = path
  while not os.path.lexists(parent):
    created.append(parent)
    parent = os.path.dirname(parent)
  try:
    os.makedirs(path, exist_ok=True)
    return _take(path) if chief else Lock(None, None)
  except OSError as e:
    for folder in created:  # deepest first
      try:
        os.rmdir(folder)
      except OSError:
        break
    reason = 'the file system is full' if e.errno in (errno.ENOSPC, errno.EDQUOT) else (
        e.strerror or str(e))
    raise WorkdirError(f'cannot write workdir {path}: {reason}') from None
