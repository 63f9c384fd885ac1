"""`fsjax eval`: picks the protocol and runs it (the Colab API is the same call).

  run_evaluation(protocol='synthetic', checkpoint=EXPORT)                  synthetic pairs
  run_evaluation(protocol='faceforensics', data=FFPP, checkpoint=EXPORT)   FF++, fsjax swaps
  run_evaluation(protocol='faceforensics', data=FFPP, swaps=DIR)           FF++, given swaps
  run_evaluation(protocol='folder', pairs='pairs.csv', checkpoint=EXPORT)  your own list

Without a protocol: faceforensics when `data` is given, folder when `pairs` is a .csv,
else synthetic for a checkpoint trained on synthetic_faces (or whose training data is not
recorded, as older exports).
"""

import json
import os
import time
from typing import Callable, Mapping, Optional

import ml_collections

from fsjax.eval import errors
from fsjax.eval import report

PROTOCOLS = ('synthetic', 'faceforensics', 'folder')


def training_data(checkpoint: str) -> Optional[str]:
  """The TFDS name a checkpoint (export or training workdir) was trained on, or None when
  it is not recorded."""
  meta_file = os.path.join(checkpoint, 'swapper.json')
  try:
    if os.path.isfile(meta_file):
      with open(meta_file) as f:
        return json.load(f).get('dataset')
    from fsjax.train import checkpointing  # pylint: disable=g-import-not-at-top
    steps = checkpointing.finished_steps(checkpoint)
    if steps:
      config, _ = checkpointing.restore_items(checkpoint, steps[-1], ())
      return config.get('dataset', {}).get('name')
  except (OSError, ValueError, KeyError, AttributeError):
    pass
  return None


def pick_protocol(protocol: str, *, checkpoint: str = '', data: str = '',
                  pairs: str = '') -> str:
  """The protocol to run (module doc); EvalInputError when it cannot be told."""
  if protocol:
    if protocol not in PROTOCOLS:
      raise errors.EvalInputError(f'--protocol must be one of {", ".join(PROTOCOLS)}, got '
                                  f'{protocol!r}')
    return protocol
  if data:
    return 'faceforensics'
  if pairs.lower().endswith('.csv'):
    return 'folder'
  if checkpoint:
    dataset = training_data(checkpoint)
    if dataset is None or dataset.startswith('synthetic_faces'):
      return 'synthetic'
    raise errors.EvalInputError(
        f'{checkpoint} was trained on {dataset}: give --protocol faceforensics --data FFPP_DIR '
        'or --protocol folder --pairs pairs.csv (or --protocol synthetic)')
  raise errors.EvalInputError('give --checkpoint (a workdir or export) or --swaps, and a '
                              'protocol (see fsjax eval --help)')


def _check_source(protocol: str, checkpoint: str, swaps: str) -> None:
  if protocol == 'synthetic':
    if not checkpoint:
      raise errors.EvalInputError('--protocol synthetic needs --checkpoint')
    if swaps:
      raise errors.EvalInputError('--swaps is for --protocol faceforensics or folder')
  elif bool(checkpoint) == bool(swaps):
    raise errors.EvalInputError(f'--protocol {protocol} needs --checkpoint (fsjax makes the '
                                'swaps) or --swaps DIR (precomputed swaps), not both')
  if checkpoint and not os.path.isdir(checkpoint):
    raise errors.EvalInputError(f'--checkpoint folder not found: {checkpoint}')


def run_evaluation(*, protocol: str = '', checkpoint: str = '', swaps: str = '',
                   data: str = '', compression: str = 'c23', split: str = 'test',
                   frames: int = 10, pairs: str = '', num_pairs: int = 0,
                   recognizers: Mapping[str, str] = (), data_dir: str = '',
                   estimators_config: Optional[ml_collections.ConfigDict] = None,
                   cache_dir: str = '', output_dir: str = '', progress: bool = True,
                   log: Callable[[str], None] = print, detector=None) -> dict:
  """Runs one protocol and writes OUT/eval.json and OUT/eval_grid.png.

  Args:
    protocol: 'synthetic' | 'faceforensics' | 'folder' | '' (module doc).
    checkpoint: export or training workdir whose swaps are scored.
    swaps: folder of precomputed swaps (faceforensics: <target>_<source>.mp4).
    data: FF++ folder (faceforensics).
    compression: FF++ originals read: raw | c23 | c40.
    split: FF++ split file splits/<split>.json.
    frames: frames sampled per video (real faces).
    pairs: synthetic: TFDS pairs dataset (default synthetic_faces/pairs<S>); folder: the
      pairs.csv.
    num_pairs: score only the first N pairs (0 = all).
    recognizers: extra {name: fsjax identity checkpoint dir}.
    data_dir: TFDS data dir (synthetic).
    estimators_config: configs/eval_estimators.py (synthetic; default: that file).
    cache_dir: estimator cache ('' = $FSJAX_CACHE or ~/.cache/fsjax).
    output_dir: OUT ('' = <checkpoint or swaps>/eval).
    progress: progress lines with ETA on stderr.
    log: status lines.
    detector: face detector for real faces (default dlib).

  Returns:
    The eval.json content plus 'output' (OUT) and 'report' (the console text).

  Raises:
    EvalInputError: bad input (one line for the user); nothing is written.
  """
  protocol = pick_protocol(protocol, checkpoint=checkpoint, data=data, pairs=pairs)
  _check_source(protocol, checkpoint, swaps)
  if frames < 1:
    raise errors.EvalInputError(f'--frames must be >= 1, got {frames}')
  if protocol == 'synthetic':
    from fsjax.eval import synthetic  # pylint: disable=g-import-not-at-top
    if pairs.lower().endswith('.csv'):
      raise errors.EvalInputError('--protocol synthetic reads a TFDS pairs dataset, not a '
                                  'CSV (use --protocol folder)')
    if estimators_config is None:
      from fsjax.train import config_files  # pylint: disable=g-import-not-at-top
      estimators_config = config_files.load('configs/eval_estimators.py', 'estimators config')
    result = synthetic.run(checkpoint, pairs_name=pairs, data_dir=data_dir,
                           num_pairs=num_pairs, recognizers=recognizers,
                           estimators_config=estimators_config, cache_dir=cache_dir,
                           output_dir=output_dir, progress=progress, log=log)
    result['report'] = synthetic.format_report(result)
    return result

  from fsjax.eval import real_faces  # pylint: disable=g-import-not-at-top
  if protocol == 'faceforensics':
    from fsjax.eval import faceforensics  # pylint: disable=g-import-not-at-top
    jobs, identities = faceforensics.make_jobs(data, compression=compression, split=split,
                                               swaps_dir=swaps or None, num_pairs=num_pairs)
    title = f'FaceForensics++ {split} ({compression})'
  else:
    from fsjax.eval import folder  # pylint: disable=g-import-not-at-top
    jobs, identities = folder.make_jobs(pairs, swaps_dir=swaps or None, num_pairs=num_pairs)
    title = f'pairs of {pairs}'
  for name, directory in dict(recognizers).items():
    if not os.path.isfile(os.path.join(directory, 'identity.json')):
      raise errors.EvalInputError(f'--recognizer {name}={directory}: not an identity '
                                  'checkpoint (no identity.json)')
  output_dir = report.check_output(output_dir or os.path.join(checkpoint or swaps, 'eval'))
  start = time.perf_counter()
  if detector is None:
    from fsjax.faces import detect  # pylint: disable=g-import-not-at-top
    detector = detect.DlibDetector()
  from fsjax.eval import recognizers as recognizers_lib  # pylint: disable=g-import-not-at-top
  embedders = recognizers_lib.face_embedders(dict(recognizers), detector)
  swapper = None
  if checkpoint:
    from fsjax.swap import swapper as swapper_lib  # pylint: disable=g-import-not-at-top
    swapper = swapper_lib.load_swapper(checkpoint, detector=detector)
  log(f'{title}: {len(jobs)} swaps, {len(identities)} identities, {frames} frames per video')
  result, grid = real_faces.evaluate_jobs(jobs, identities, frames=frames, swapper=swapper,
                                          detector=detector, recognizers=embedders,
                                          progress=progress)
  result = dict({'protocol': protocol}, **result)
  result.update(checkpoint=os.path.abspath(checkpoint) if checkpoint else None,
                swaps=os.path.abspath(swaps) if swaps else None,
                wall_s=time.perf_counter() - start)
  if protocol == 'faceforensics':
    result.update(data=os.path.abspath(data), compression=compression, split=split)
  else:
    result['pairs'] = os.path.abspath(pairs)
  report.write_outputs(output_dir, result, grid)
  result['output'] = output_dir
  result['report'] = real_faces.format_report(result, title)
  return result
