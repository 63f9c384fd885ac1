"""GHOST (ai-forever/sber-swap) weights -> a swapper export (`fsjax convert-generator`).

The export is a normal one (fsjax.swap.export: `load_swapper`, `fsjax swap`, `fsjax eval`,
the notebook) whose swapper.json records GHOST's preprocessing, which the Swapper follows:

  alignment 'ghost224'       5-point similarity onto the ArcFace template x 2 in a 224 crop,
                             cv2-resized to 256 for the generator (fsjax.faces.align)
  identity_crop_mode resize  the identity from the 224 crop, bilinear (align_corners) to 112
                             (Swapper.identity_size = 224)
  model.id_normalize False   z_id is the raw 512-d ArcFace embedding
  RGB, [-1, 1]               as every fsjax model

With --discriminator the export also carries GHOST's D (pix2pixHD, n_layers 5, instance norm)
as its training side (`discriminator/`, swapper.json 'discriminator'), for config.init_from.
The mapping is fsjax/aei/convert.py; the check against the PyTorch reference is passed in as
`verify` (fsjax.bench.torch_reference.ghost.verify sits above this layer).
"""

import os
import tempfile
from typing import Any, Callable, Optional

import ml_collections

from fsjax.aei import convert
from fsjax.data import paths
from fsjax.identity import checkpoint as identity_checkpoint
from fsjax.identity import convert as arcface_convert
from fsjax.swap import export

ConversionError = convert.ConversionError
# verify(state_dict, variables, layout=...) -> worst |y_fsjax - y_torch|
Verifier = Callable[..., float]

# config.model fields that only change how the model computes, not what (any value works).
_COMPUTE_FIELDS = {'dtype': 'float32', 'remat': False, 'aad_merge_attr_convs': False}


def model_fields(layout: convert.GeneratorLayout) -> dict[str, Any]:
  """The full config.model of a GHOST export (JSON types)."""
  fields = dict(layout.model_fields(), **_COMPUTE_FIELDS)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def ghost_meta(layout: convert.GeneratorLayout, identity_meta: dict, *,
               discriminator: Optional[convert.DiscriminatorLayout] = None,
               source: Optional[dict] = None) -> dict:
  """swapper.json of a converted GHOST generator (module docstring)."""
  config = {'image_size': layout.image_size, 'model': model_fields(layout),
            # GHOST trained on VGGFace2 (its own crops): `fsjax eval` asks for a real-face
            # protocol rather than running the synthetic one.
            'dataset': {'alignment': 'ghost224', 'name': 'ghost/vggface2'},
            'identity': {'crop_mode': 'resize'}}
  meta = export.make_meta(ml_collections.ConfigDict(config), identity_meta, source=source)
  if discriminator is not None:
    meta['discriminator'] = discriminator.discriminator_fields()
  return meta


def _identity(identity: str, verify: bool, log: Callable[[str], None]) -> tuple[dict, dict]:
  """(identity variables, identity.json meta) from an fsjax identity dir or a .pth/.onnx."""
  if os.path.isdir(identity):
    try:
      _, variables, meta = identity_checkpoint.load_identity(identity)
    except (OSError, ValueError) as e:
      raise ConversionError(f'--identity {identity}: {e}') from e
    return variables, {k: v for k, v in meta.items() if k != 'path'}
  # The convert-arcface code path, into a scratch folder that is removed afterwards.
  with tempfile.TemporaryDirectory(prefix='fsjax-ghost-identity-') as tmp:
    meta = arcface_convert.convert(
        identity, os.path.join(tmp, 'identity'), verify=verify,
        log=lambda line: None if line.startswith('wrote ') else log(line))  # scratch, not OUT
    _, variables, _ = identity_checkpoint.load_identity(os.path.join(tmp, 'identity'))
  return variables, meta


def convert_ghost(generator_path: str, output_dir: str, identity: str, *,
                  discriminator_path: str = '', verify: Optional[Verifier] = None,
                  overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
  """Converts GHOST's G (+ its ArcFace, + optionally its D) into an export at output_dir.

  Args:
    generator_path: G_unet_{1block,2blocks,3blocks}.pth (blocks detected from the keys).
    output_dir: the export folder; written under a temporary name and renamed when complete,
      nothing is left there on any error.
    identity: GHOST's backbone.pth (arcface_torch IResNet-100; converted as by
      `fsjax convert-arcface`) or an fsjax identity checkpoint directory.
    discriminator_path: D_unet_*.pth to carry as the training side ('' = none).
    verify: runs the converted G beside the PyTorch reference and returns the worst
      difference; above convert.MAX_VERIFY_DIFF nothing is written. None skips it (and the
      identity encoder's cosine check).
    overwrite: replace output_dir when it is an earlier export.
    log: progress printer.

  Returns:
    The swapper.json dict written.

  Raises:
    ConversionError: unreadable file, unknown / missing / mis-shaped key, a D given as G,
      mismatched identity size, failed verification (one line, naming the key).
    paths.OutputError: output_dir overlaps an input or may not be replaced (checked first).
  """
  inputs = [p for p in (generator_path, identity, discriminator_path) if p]
  out = paths.check_output_dir(output_dir, inputs, marker=export.META_FILE, kind='export',
                               overwrite=overwrite)
  for flag, path in (('', generator_path), ('--discriminator ', discriminator_path)):
    if path and not os.path.isfile(path):
      raise ConversionError(f'{flag}{path}: no such file')
  if not os.path.exists(identity):
    raise ConversionError(f'--identity {identity}: no such file or identity directory')
  sd = convert.load_state_dict_file(generator_path)
  layout = convert.detect_layout(sd)
  variables = convert.generator_to_flax(sd, layout)
  log(f'{generator_path}: GHOST AEI_Net ({layout.backbone}), {layout.num_blocks} block(s) per '
      f'AAD ResBlk, {layout.image_size} px, {layout.id_dim}-d z_id')
  d_layout = d_variables = None
  if discriminator_path:
    d_sd = convert.load_state_dict_file(discriminator_path)
    d_layout = convert.detect_discriminator_layout(d_sd)
    d_variables = {k: v for k, v in convert.discriminator_to_flax(d_sd, d_layout).items() if v}
    log(f'{discriminator_path}: MultiscaleDiscriminator, {d_layout.num_d} scales, n_layers '
        f'{d_layout.n_layers}, {d_layout.norm} norm')
  id_variables, id_meta = _identity(identity, verify is not None, log)
  if int(id_meta['embedding_dim']) != layout.id_dim:
    raise ConversionError(f"--identity gives {id_meta['embedding_dim']}-d embeddings but the "
                          f"generator takes {layout.id_dim}-d z_id (key 'generator.up1.weight')")
  checked = {}
  if verify is not None:
    worst = float(verify(sd, variables, layout=layout))
    log(f'verification: worst |y_fsjax - y_torch| = {worst:.3g} over 2 random inputs '
        f'(limit {convert.MAX_VERIFY_DIFF:g}, outputs in [-1, 1])')
    if not worst <= convert.MAX_VERIFY_DIFF:
      raise ConversionError(f'verification failed: worst |y_fsjax - y_torch| = {worst:.3g} > '
                            f'{convert.MAX_VERIFY_DIFF:g}; nothing written')
    checked = {'reference': 'fsjax.bench.torch_reference.ghost', 'max_abs_diff': worst,
               'num_inputs': 2}
  source = {'converted_from': 'ghost (ai-forever/sber-swap)',
            'generator': os.path.basename(generator_path), 'num_blocks': layout.num_blocks,
            'identity': os.path.basename(os.path.normpath(identity)),
            'discriminator': os.path.basename(discriminator_path) if discriminator_path else '',
            'verification': checked}
  meta = ghost_meta(layout, id_meta, discriminator=d_layout, source=source)
  export.write_export(out, meta, variables, id_variables, overwrite=overwrite, inputs=inputs,
                      discriminator_variables=d_variables)
  log(f'wrote {out}')
  return meta
