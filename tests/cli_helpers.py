"""Runs many `fsjax` command lines cheaply: one interpreter imports the heavy modules once,
then each command line runs in a forked child, a fresh process as far as absl flags, exit
code and output go (about 0.1 s a case instead of 3-8 s of imports).

  results = cli_helpers.run_cases({'name': {'argv': ['train', ...], 'cwd': DIR,
                                            'env': {...}}, ...})
  results['name'] -> {'code': int, 'stdout': str, 'stderr': str}

Nothing in the parent touches a device before forking (importing jax starts no backend).
As a script (what run_cases starts): python tests/cli_helpers.py CASES.json RESULTS.json.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Imported once in the parent; the subcommand modules (which define absl flags) are not, so
# every child defines its own command's flags.
PRELOAD = ('fsjax.aei.trainer', 'fsjax.identity.trainer', 'fsjax.identity.convert',
           'fsjax.swap.files', 'fsjax.faces.align_images', 'fsjax.data.build',
           'tfds_builders.synthetic_faces', 'tfds_builders.aligned_faces')
CASE_TIMEOUT_S = 120


def run_cases(cases: dict, env: dict = None, timeout: float = 600) -> dict:
  """Runs {name: {'argv', 'cwd'?, 'env'?}} in one driver process; returns {name: result}."""
  with tempfile.TemporaryDirectory() as folder:
    cases_path, results_path = (os.path.join(folder, n) for n in ('cases.json', 'out.json'))
    with open(cases_path, 'w') as f:
      json.dump(cases, f)
    run = subprocess.run([sys.executable, os.path.abspath(__file__), cases_path, results_path],
                         env=dict(os.environ if env is None else env, JAX_PLATFORMS='cpu'),
                         capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    if run.returncode != 0:
      raise RuntimeError(f'cli driver failed ({run.returncode}): {run.stderr[-3000:]}')
    with open(results_path) as f:
      return json.load(f)


def _run_child(case: dict, out_path: str, err_path: str) -> None:
  """In the forked child: runs one command line and exits with its code."""
  code = 1
  try:
    os.chdir(case.get('cwd') or REPO)
    os.environ.update(case.get('env') or {})
    for fd, path in ((1, out_path), (2, err_path)):
      handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      os.dup2(handle, fd)
      os.close(handle)
    from fsjax import main  # pylint: disable=g-import-not-at-top
    try:
      code = main.run(['fsjax'] + list(case['argv']))
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    code = 1
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit handlers of the parent's modules


def _drive(cases_path: str, results_path: str) -> None:
  sys.path.insert(0, REPO)
  import importlib  # pylint: disable=g-import-not-at-top
  for name in PRELOAD:
    importlib.import_module(name)
  with open(cases_path) as f:
    cases = json.load(f)
  results = {}
  with tempfile.TemporaryDirectory() as folder:
    for name, case in cases.items():
      out_path, err_path = os.path.join(folder, 'out'), os.path.join(folder, 'err')
      sys.stdout.flush()
      sys.stderr.flush()
      start = time.time()
      pid = os.fork()
      if pid == 0:
        _run_child(case, out_path, err_path)
      while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
          break
        if time.time() - start > CASE_TIMEOUT_S:
          os.kill(pid, 9)
          _, status = os.waitpid(pid, 0)
          break
        time.sleep(0.02)
      with open(out_path) as out, open(err_path) as err:
        results[name] = {'code': os.waitstatus_to_exitcode(status), 'stdout': out.read(),
                         'stderr': err.read(), 'seconds': round(time.time() - start, 2)}
  with open(results_path, 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  _drive(sys.argv[1], sys.argv[2])
