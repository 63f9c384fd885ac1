"""fsjax eval: score face swaps the way papers do (ID retrieval, pose, expression).

  fsjax eval --checkpoint EXPORT_OR_WORKDIR [--protocol synthetic] [--num_pairs N]
  fsjax eval --protocol faceforensics --data FFPP_DIR --checkpoint EXPORT [--compression c23]
             [--frames 10] [--split test]
  fsjax eval --protocol faceforensics --data FFPP_DIR --swaps DIR   (DIR/<target>_<source>.mp4)
  fsjax eval --protocol folder --pairs pairs.csv (--checkpoint EXPORT | --swaps DIR)
  common: [--recognizer NAME=IDENTITY_DIR ...] [--output OUT]

synthetic (default for checkpoints trained on synthetic_faces): every held-out pair of
synthetic_faces/pairs<S>: PSNR / SSIM to the known true swap (whole image and face region),
ID retrieval by an independent recognizer, pose and expression error by a regressor, for the
swap and, as reference, for the true swap and for returning X_t or X_s. Its estimators are
trained once and cached ($FSJAX_CACHE, default ~/.cache/fsjax; settings: --estimators.*).
faceforensics / folder: real faces, dlib detection, dlib's face descriptor for ID retrieval
(plus each --recognizer), head pose and expression from dlib's 68 landmarks.
Writes OUT/eval.json and OUT/eval_grid.png (OUT default <checkpoint or swaps>/eval) and
prints a table. The logic lives in fsjax.eval.run.
"""

import logging as py_logging
import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from fsjax.commands import errors

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROTOCOL = flags.DEFINE_enum(
    'protocol', '', ['', 'synthetic', 'faceforensics', 'folder'],
    "'' picks: faceforensics with --data, folder with --pairs X.csv, else synthetic.")
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Training workdir or export to score.')
_SWAPS = flags.DEFINE_string(
    'swaps', None, 'Folder of precomputed swaps <target>_<source>.mp4, instead of --checkpoint.')
_DATA = flags.DEFINE_string('data', None, 'faceforensics: the FaceForensics++ folder.')
_COMPRESSION = flags.DEFINE_enum('compression', 'c23', ['raw', 'c23', 'c40'],
                                 'faceforensics: which originals to read.')
_SPLIT = flags.DEFINE_string('split', 'test', 'faceforensics: splits/<split>.json.')
_FRAMES = flags.DEFINE_integer('frames', 10, 'Frames sampled evenly per video.')
_PAIRS = flags.DEFINE_string(
    'pairs', '', 'folder: the pairs.csv; synthetic: TFDS pairs dataset (default '
    'synthetic_faces/pairs<S>).')
_NUM_PAIRS = flags.DEFINE_integer('num_pairs', 0, 'Score only the first N pairs (0 = all).')
_RECOGNIZER = flags.DEFINE_multi_string(
    'recognizer', [], 'Extra identity encoder as NAME=DIR (an fsjax identity checkpoint).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'synthetic: TFDS data dir (default: TFDS default).')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', '', 'synthetic: estimator cache (default $FSJAX_CACHE or ~/.cache/fsjax).')
_OUTPUT = flags.DEFINE_string('output', '', 'Output folder (default <checkpoint or swaps>/eval).')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Progress lines with ETA on stderr.')
# The default file is read (and --estimators.a.b=v applied) when the flag is defined, at
# import: a bad override then becomes the one-line error of main().
_ESTIMATORS_ERROR = None
try:
  _ESTIMATORS = config_flags.DEFINE_config_file(
      'estimators', os.path.join(_REPO, 'configs', 'eval_estimators.py'),
      'synthetic: estimator settings (override fields: '
      '--estimators.regressor.num_train_steps=N).', lock_config=True)
  flags.FLAGS.register_flag_by_module(__name__, flags.FLAGS['estimators'])
except (KeyError, AttributeError, TypeError, ValueError) as e:
  _ESTIMATORS_ERROR = errors.flag_error(e, sys.argv)


def _status(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def main(argv):
  # pylint: disable=g-import-not-at-top
  from fsjax.eval import errors as eval_errors
  from fsjax.eval import run
  if _ESTIMATORS_ERROR:
    return errors.fail('eval', f'{_ESTIMATORS_ERROR} (see fsjax eval --help)')
  if len(argv) > 1:
    return errors.fail('eval', f'unexpected arguments: {" ".join(argv[1:])}')
  recognizers = {}
  for item in _RECOGNIZER.value:
    name, sep, directory = item.partition('=')
    if not sep or not name or not directory:
      return errors.fail('eval', f'--recognizer wants NAME=DIR, got {item!r}')
    recognizers[name] = directory
  # fsjax logs its progress (dataset builds, estimator training) at INFO; the libraries warn.
  logging.set_verbosity(logging.INFO)
  py_logging.getLogger().setLevel(py_logging.INFO)
  for noisy in ('absl', 'jax', 'orbax'):
    py_logging.getLogger(noisy).setLevel(py_logging.WARNING)
  from fsjax.swap import export
  from fsjax.swap import swapper
  try:
    result = run.run_evaluation(
        protocol=_PROTOCOL.value, checkpoint=_CHECKPOINT.value or '', swaps=_SWAPS.value or '',
        data=_DATA.value or '', compression=_COMPRESSION.value, split=_SPLIT.value,
        frames=_FRAMES.value, pairs=_PAIRS.value, num_pairs=_NUM_PAIRS.value,
        recognizers=recognizers, data_dir=_DATA_DIR.value,
        estimators_config=_ESTIMATORS.value, cache_dir=_CACHE_DIR.value,
        output_dir=_OUTPUT.value, progress=_PROGRESS.value, log=_status)
  except (eval_errors.EvalInputError, export.ExportError, swapper.SwapInputError,
          FileNotFoundError, ValueError) as e:
    return errors.fail('eval', e)
  print(result['report'])
  print(f'wrote {os.path.join(result["output"], "eval.json")}')
  return 0
