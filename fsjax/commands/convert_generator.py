"""`fsjax convert-generator G.pth OUT --identity backbone.pth|IDENTITY_DIR [--discriminator D.pth]
[--no-verify] [--overwrite]`.

Converts a GHOST (ai-forever/sber-swap) generator, G_unet_{1block,2blocks,3blocks}.pth (the
number of blocks is read from the keys), into a swapper export OUT for `fsjax swap
--checkpoint OUT`, `fsjax.load_swapper(OUT)` and `fsjax eval`. --identity is GHOST's ArcFace
backbone.pth (converted as `fsjax convert-arcface` does) or an fsjax identity directory;
--discriminator adds GHOST's D_unet_*.pth as the export's training side, for
`fsjax train --config configs/ghost_finetune.py --config.init_from=OUT`. The swap follows
GHOST's preprocessing (alignment 'ghost224', raw identity embedding; fsjax/swap/ghost.py).

The converted generator is run beside the PyTorch reference of GHOST's layout on random
inputs and the worst difference printed; above 1e-3 nothing is written (--no-verify skips
this and the identity check; so does a missing PyTorch, saying so). .pth files are read
with torch.load(weights_only=True): no pickled code is ever run. Any bad input (an unknown,
missing or mis-shaped key, a D given as G, an unreadable file, an output that exists) prints
one line `fsjax convert-generator: error: ...`, exits 2 and writes nothing.
"""

from absl import flags

from fsjax.commands import errors
from fsjax.data import paths
from fsjax.swap import export
from fsjax.swap import ghost

_IDENTITY = flags.DEFINE_string(
    'identity', None, "GHOST's ArcFace backbone.pth (arcface_torch IResNet-100) or an fsjax "
    'identity directory (`fsjax convert-arcface`).')
_DISCRIMINATOR = flags.DEFINE_string(
    'discriminator', '', 'D_unet_*.pth to carry for fine-tuning (config.init_from); inference '
    'ignores it.')
_VERIFY = flags.DEFINE_bool('verify', True, 'Compare the converted generator with the PyTorch '
                            'reference (and the identity encoder with its source).')
_NO_VERIFY = flags.DEFINE_bool('no-verify', False, 'Skip the verification (same as --noverify).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace OUT if it is an earlier export.')

USAGE = ('usage: fsjax convert-generator G.pth OUT --identity backbone.pth|IDENTITY_DIR '
         '[--discriminator D.pth] [--no-verify] [--overwrite]')


def _verifier():
  """The PyTorch reference check, or None (said why) when skipped."""
  if not _VERIFY.value or _NO_VERIFY.value:
    print('verification skipped (--no-verify)')
    return None
  try:
    from fsjax.bench.torch_reference import ghost as reference  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("verification skipped: PyTorch is not installed (pip install 'fsjax[torch]')")
    return None
  return reference.verify


def main(argv):
  if len(argv) != 3:
    return errors.fail('convert-generator', USAGE)
  if not _IDENTITY.value:
    return errors.fail('convert-generator', f'missing --identity ({USAGE})')
  try:
    ghost.convert_ghost(argv[1], argv[2], _IDENTITY.value,
                        discriminator_path=_DISCRIMINATOR.value, verify=_verifier(),
                        overwrite=_OVERWRITE.value)
  except (ghost.ConversionError, paths.OutputError, export.ExportError) as e:
    return errors.fail('convert-generator', e)
  return 0
