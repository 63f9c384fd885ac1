"""fsjax eval: score a trained swapper on the synthetic_faces pairs (known ground-truth swaps).

  fsjax eval --checkpoint WORKDIR_OR_EXPORT [--recognizer name=IDENTITY_DIR ...]
             [--num_pairs 1000] [--data_dir D] [--output DIR]

Prints, and writes to <output>/eval.json: the fraction of held-out pairs whose swap is closer
(cosine) to the source identity than to the target, under the training identity encoder and
each --recognizer (train a second one with another seed/architecture so the metric is not the
training loss), and the error to the ground-truth swap against returning X_t or X_s.
eval_grid.png shows X_s | X_t | Y | ground truth.
"""


from absl import flags

from fsjax import evaluate
from fsjax import export
from fsjax.commands import errors

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Training workdir or export directory.')
_RECOGNIZER = flags.DEFINE_multi_string(
    'recognizer', [], 'Extra identity encoder as name=DIR (an identity checkpoint dir).')
_NUM_PAIRS = flags.DEFINE_integer('num_pairs', 1000, 'Held-out pairs to score.')
_PAIRS = flags.DEFINE_string('pairs', '', 'TFDS pairs dataset (default synthetic_faces/pairsS).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir (default: TFDS default).')
_OUTPUT = flags.DEFINE_string('output', '', 'Output dir (default <checkpoint>/eval).')


def main(argv):
  if len(argv) > 1:
    return errors.fail('eval', f'unexpected arguments: {" ".join(argv[1:])}')
  if not _CHECKPOINT.value:
    return errors.fail('eval', 'give --checkpoint (a training workdir or an export)')
  recognizers = {}
  for item in _RECOGNIZER.value:
    name, sep, directory = item.partition('=')
    if not sep or not name or not directory:
      return errors.fail('eval', f'--recognizer wants name=DIR, got {item!r}')
    recognizers[name] = directory
  try:
    result = evaluate.run_evaluation(
        _CHECKPOINT.value, pairs_name=_PAIRS.value, data_dir=_DATA_DIR.value,
        num_pairs=_NUM_PAIRS.value, recognizers=recognizers, output_dir=_OUTPUT.value)
  except (export.ExportError, FileNotFoundError, ValueError) as e:
    return errors.fail('eval', e)
  print(evaluate.format_report(result))
  return 0
