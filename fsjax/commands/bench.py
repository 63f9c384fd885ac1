"""`fsjax bench --config configs/X.py --mode train|swap|data [...]`: throughput benchmarks.

Examples:
  fsjax bench --config configs/tiny.py --mode train --compare_torch --steps 20
  fsjax bench --config configs/default.py --mode train --compare_torch
    --config.model.dtype=bfloat16 --config.per_device_batch_size=32 --json /tmp/b.json
    (one command line)
  fsjax bench --config configs/tiny.py --mode train,data,swap --swap_batches=1,32
  fsjax bench --mode video --video clip.mp4 (--checkpoint EXPORT | --null_model)
    [--json out.json]   (frames/s end to end, ms/frame per stage, frames with a face)

--mode takes one mode or a comma-separated list (run in one process, so `data` can
compare with the `train` figure of the same run). Without identity.checkpoint the
identity encoder has random weights (speed does not depend on them). The logic lives
in fsjax.bench.run (JAX) and fsjax.bench.torch_baseline (the PyTorch baseline, from a checkout).
"""

import json
import logging as py_logging
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from fsjax.commands import errors

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training config file (configs/*.py).', lock_config=True)
_MODE = flags.DEFINE_string(
    'mode', 'train', "'train', 'swap', 'data', or a comma list of them; or 'video' alone.")
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed training steps (per framework).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed training steps after compilation.')
_COMPARE_TORCH = flags.DEFINE_boolean(
    'compare_torch', False, 'Also time the PyTorch reference training step (eager).')
_TORCH_COMPILE = flags.DEFINE_boolean(
    'torch_compile', False, 'Also time the PyTorch step under torch.compile.')
_TORCH_CHANNELS_LAST = flags.DEFINE_boolean(
    'torch_channels_last', False, 'Also time PyTorch eager with channels_last tensors.')
_SWAP_BATCHES = flags.DEFINE_list('swap_batches', ['1', '32'], 'Swap-mode batch sizes.')
_DATA_BATCHES = flags.DEFINE_integer('data_batches', 20, 'Timed batches of the data mode.')
_DATA_SOURCE = flags.DEFINE_enum(
    'data_source', 'auto', ['auto', 'tfds', 'memory'],
    'Data mode records: the prepared TFDS dataset, synthetic PNG records in memory, or '
    'auto (TFDS when prepared).')
_TRAIN_JSON = flags.DEFINE_string(
    'train_json', None, 'Data mode without train mode: a previous --json to compare with.')
_PROFILE_DIR = flags.DEFINE_string(
    'profile_dir', None, 'Write a jax.profiler trace of 3 training steps there.')
_JSON = flags.DEFINE_string('json', None, 'Write the results as JSON to this file.')
# --mode video (alone; no --config): the `fsjax swap` video path on a clip.
_VIDEO = flags.DEFINE_string('video', None, 'Video mode: the clip to swap.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Video mode: export directory or training workdir of the model.')
_NULL_MODEL = flags.DEFINE_boolean(
    'null_model', False, 'Video mode: a pass-through generator instead of --checkpoint (times '
    'the face pipeline alone: decode, detect, track, align, paste, encode).')
_SOURCE = flags.DEFINE_string(
    'source', None, 'Video mode: source photo (default: a fixed random identity).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Video mode: faces per model batch.')
_DETECT_EVERY = flags.DEFINE_integer(
    'detect_every', 10, 'Video mode: keyframe interval of the face tracker (as fsjax swap).')
_DETECT_SIZE = flags.DEFINE_integer(
    'detect_size', 640, 'Video mode: long side of the frame copy the detector sees.')
# The spelling (--compare-torch) works too.
for _name in ('compare_torch', 'torch_compile', 'torch_channels_last', 'swap_batches',
              'data_batches', 'data_source', 'train_json', 'profile_dir'):
  flags.DEFINE_alias(_name.replace('_', '-'), _name)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  for noisy in ('absl', 'jax', 'orbax'):
    py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
  modes = [m.strip() for m in _MODE.value.split(',') if m.strip()]
  if 'video' in modes:
    return _video(modes)
  if _CONFIG.value is None:
    return errors.fail('bench', f'--config is required for --mode {_MODE.value}')
  from fsjax.bench import run as bench  # pylint: disable=g-import-not-at-top
  from fsjax.bench import torch_baseline as bench_torch  # pylint: disable=g-import-not-at-top
  try:
    out = bench.run(
        _CONFIG.value, modes, steps=_STEPS.value, warmup=_WARMUP.value,
        compare_torch=_COMPARE_TORCH.value, torch_compile=_TORCH_COMPILE.value,
        torch_channels_last=_TORCH_CHANNELS_LAST.value,
        swap_batches=tuple(int(b) for b in _SWAP_BATCHES.value),
        data_batches=_DATA_BATCHES.value, data_source=_DATA_SOURCE.value,
        profile_dir=_PROFILE_DIR.value, train_json=_TRAIN_JSON.value, json_path=_JSON.value)
  except bench_torch.TorchReferenceUnavailable as e:
    return errors.fail('bench', e)
  env = out['environment']
  print(f"# {env['date']} {env['device_kind']} x{env['num_devices']} ({env['platform']}), "
        f"{env['cpu_count']} CPUs, load {env['load_avg_1m']} -> {env['load_avg_1m_end']}, "
        f"jax {env['jax_version']}")
  print(out['table'])
  if _JSON.value:
    out = dict(out, command=' '.join(['fsjax'] + sys.argv[1:]))
    with open(_JSON.value, 'w') as f:
      json.dump(out, f, indent=1, default=str)
    print(f'wrote {_JSON.value}')


def _video(modes):
  """`--mode video`: frames/s and ms/frame per stage of a video swap (fsjax.bench.video)."""
  if modes != ['video']:
    return errors.fail('bench', '--mode video runs alone (not in a list with other modes)')
  if not _VIDEO.value:
    return errors.fail('bench', '--mode video needs --video CLIP')
  if _NULL_MODEL.value == bool(_CHECKPOINT.value):
    return errors.fail('bench', '--mode video needs --checkpoint EXPORT or --null_model (one)')
  from fsjax.bench import video as bench_video  # pylint: disable=g-import-not-at-top
  from fsjax.swap import files as swap_files  # pylint: disable=g-import-not-at-top
  try:
    out = bench_video.bench_video(
        _VIDEO.value, checkpoint=_CHECKPOINT.value, null_model=_NULL_MODEL.value,
        source=_SOURCE.value, batch_size=_BATCH_SIZE.value, detect_every=_DETECT_EVERY.value,
        detect_max_side=_DETECT_SIZE.value)
  except FileNotFoundError as e:
    return errors.fail('bench', f'file not found: {e}')
  except swap_files.USER_ERRORS as e:
    return errors.fail('bench', e)
  env = out['environment']
  print(f"# {env['date']} {env['cpu_count']} CPUs, load {env['load_avg_1m']} -> "
        f"{env['load_avg_1m_end']}")
  print(bench_video.format_video(out))
  if _JSON.value:
    out = dict(out, command=' '.join(['fsjax'] + sys.argv[1:]))
    with open(_JSON.value, 'w') as f:
      json.dump(out, f, indent=1, default=str)
    print(f'wrote {_JSON.value}')
  return 0
