"""`fsjax convert-arcface IN OUT [--no-verify] [--alignment arcface|ffhq] [--overwrite]`.

IN: an arcface_torch backbone.pth (r18/34/50/100, depth detected from the keys) or an
InsightFace ONNX recognizer (e.g. w600k_r50.onnx). OUT: an identity checkpoint directory
(identity.json + Orbax variables) for --config.identity.checkpoint and
fsjax.load_identity_encoder. Exit code 0 on success, 1 on a conversion error (one line on
stderr naming the key or node; nothing is written), 2 on bad usage: among others an OUT that
is or contains IN, or an existing OUT that is not an earlier identity checkpoint (--overwrite
replaces only a folder with an identity.json, never anything else).
"""

import sys

from absl import flags

from fsjax.commands import errors
from fsjax.data import paths
from fsjax.identity import convert as arcface_convert

_VERIFY = flags.DEFINE_bool('verify', True, 'Compare source and converted embeddings.')
_NO_VERIFY = flags.DEFINE_bool('no-verify', False, 'Skip the verification (same as --noverify).')
_VERIFY_INPUTS = flags.DEFINE_integer('verify_inputs', 4, 'Random inputs for the verification.')
_BN_EPS = flags.DEFINE_float('bn_eps', 1e-5, 'BatchNorm epsilon of a .pth (arcface_torch: 1e-5; '
                             'ONNX files carry their own).')
_ALIGNMENT = flags.DEFINE_enum('alignment', 'arcface', ['arcface', 'ffhq', 'ghost224'],
                               'Face alignment the weights expect (InsightFace: arcface).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace OUT if it is an earlier identity checkpoint.')


def main(argv):
  if len(argv) != 3:
    print('usage: fsjax convert-arcface IN(.pth|.onnx) OUT_DIR [--no-verify] '
          '[--alignment arcface|ffhq] [--overwrite]', file=sys.stderr)
    return 2
  try:
    arcface_convert.convert(argv[1], argv[2], verify=_VERIFY.value and not _NO_VERIFY.value,
                            bn_eps=_BN_EPS.value, alignment=_ALIGNMENT.value,
                            overwrite=_OVERWRITE.value, num_verify=_VERIFY_INPUTS.value)
  except paths.OutputError as e:
    return errors.fail('convert-arcface', e)
  except arcface_convert.ConversionError as e:
    return errors.fail('convert-arcface', e, status=1)
  return 0
