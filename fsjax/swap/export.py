"""Exports a trained swapper as a self-contained Orbax checkpoint, and loads it back.

Export layout (everything inference needs, nothing of the train state):

  <dir>/swapper.json   format/version, fsjax version, image_size, config.model, the alignment
                       of the training data ('ffhq' | 'arcface' | 'ghost224'), the identity
                       crop mode, the identity encoder's meta (identity.json fields), where it
                       came from
  <dir>/variables/     Orbax (StandardSave) tree {'generator': {'params', 'batch_stats'},
                       'identity': {'params', 'batch_stats'}}; generator params are the EMA
  <dir>/discriminator/ optional, the training side: Orbax tree {'params', 'batch_stats'?} of
                       the MultiscaleDiscriminator that swapper.json 'discriminator' describes
                       (its config.discriminator fields); fine-tuning (config.init_from) starts
                       D from it, inference never reads it (`fsjax convert-generator
                       --discriminator` writes one)
  <dir>/hear/          optional, stage 2: Orbax tree {'params', 'batch_stats'} of the HEAR-Net
                       that swapper.json 'hear' describes ({'channels', 'source'}); the
                       Swapper refines its swaps with it (`fsjax export --hear HEAR_WORKDIR`)

The directory is written under a temporary name next to `<dir>` and renamed when complete.
`load_bundle` rebuilds the modules from swapper.json with fsjax.models only (no training code)
and checks every array's shape against them before restoring. It also reads a training workdir
(the latest checkpoint's EMA generator params).
"""

import dataclasses
import json
import os
import warnings
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fsjax import models
from fsjax.data import paths
from fsjax.identity import checkpoint as identity_checkpoint
from fsjax.identity import resolve
from fsjax.models import arcface
from fsjax.models import hear_net
from fsjax.train import checkpointing

FORMAT = 'fsjax-swapper'
FORMAT_VERSION = 1
META_FILE = 'swapper.json'
VARIABLES_DIR = 'variables'
DISCRIMINATOR_DIR = 'discriminator'
HEAR_DIR = 'hear'


class ExportError(ValueError):
  """A directory that is not a usable swapper export or training workdir."""


class UnreadableCheckpointWarning(UserWarning):
  """The newest checkpoint of a workdir is unreadable; an older step is used."""


@dataclasses.dataclass
class Bundle:
  """Everything a Swapper is built from."""
  generator: Any  # AEINet module
  generator_variables: dict  # {'params', 'batch_stats'?}
  identity_module: Any  # IResNet module
  identity_variables: dict  # {'params', 'batch_stats'}
  meta: dict  # swapper.json content
  hear: Any = None  # HEARNet module of meta['hear'], or None
  hear_variables: Optional[dict] = None  # {'params', 'batch_stats'} of it


def _to_numpy(tree: Any) -> Any:
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _plain(tree: Any) -> dict:
  """FrozenDict / nested mappings -> nested dicts."""
  if hasattr(tree, 'items'):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


# config.model fields added after format-1 exports were first written, with the value those
# exports were trained with (the model reads every field directly).
_MODEL_FIELDS_ADDED = {'aad_merge_attr_convs': False, 'aad_num_blocks': 2, 'id_normalize': True,
                       'attr_full_res_channels': 0}


def model_config(meta: dict) -> ml_collections.ConfigDict:
  """The ConfigDict (image_size, model) that fsjax.models.build_generator expects."""
  return ml_collections.ConfigDict({'image_size': meta['image_size'],
                                    'model': dict(_MODEL_FIELDS_ADDED, **meta['model'])})


def build_generator(meta: dict) -> Any:
  """The AEINet module described by swapper.json."""
  return models.build_generator(model_config(meta))


def build_identity(identity_meta: dict) -> Any:
  """The IResNet described by identity.json fields (layers, width, embedding_dim, bn_eps)."""
  return identity_checkpoint.module_from_meta(identity_meta)


def abstract_variables(meta: dict) -> dict:
  """ShapeDtypeStruct tree of the exported variables, from the modules alone."""
  size = int(meta['image_size'])
  generator = build_generator(meta)
  identity = build_identity(meta['identity'])
  id_dim = int(meta['model']['id_dim'])
  rng = jax.random.key(0)
  gen = jax.eval_shape(lambda: generator.init(rng, jnp.zeros((1, size, size, 3)),
                                              jnp.zeros((1, id_dim)), train=False))
  ident = jax.eval_shape(lambda: identity.init(rng, jnp.zeros((1, arcface.INPUT_SIZE, arcface.INPUT_SIZE, 3)),
                                                  train=False))
  return {'generator': _plain(gen), 'identity': _plain(ident)}


def abstract_discriminator(meta: dict) -> dict:
  """ShapeDtypeStruct tree {'params'[, 'batch_stats']} of the discriminator that
  swapper.json 'discriminator' describes (exports that carry one)."""
  size = int(meta['image_size'])
  module = models.build_discriminator(ml_collections.ConfigDict(
      {'discriminator': dict(meta['discriminator']), 'model': {'dtype': 'float32'}}))
  tree = _plain(jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                   jnp.zeros((1, size, size, 3)), train=False)))
  return {k: v for k, v in tree.items() if v}  # no 'batch_stats' with instance norm


# swapper.json 'hear' fields newer than it, at the values older exports mean.
_HEAR_FIELDS_ADDED = {'full_res_channels': 0, 'target_input': False, 'blend_mask': False,
                      'mask_channels': [], 'keep_swap': False, 'mask_threshold': 0.0}


def _hear_fields(hear: dict) -> dict:
  """The architecture fields of a HEAR-Net block (a run's config.hear or swapper.json
  'hear'), those an older block lacks at their defaults."""
  fields = dict(_HEAR_FIELDS_ADDED, **hear)
  return {'channels': list(fields['channels']),
          'full_res_channels': int(fields['full_res_channels']),
          'target_input': bool(fields['target_input']),
          'blend_mask': bool(fields['blend_mask']),
          'mask_channels': list(fields['mask_channels']),
          'keep_swap': bool(fields['keep_swap']),
          'mask_threshold': float(fields['mask_threshold'])}


def build_hear(meta: dict) -> Any:
  """The HEARNet that swapper.json 'hear' describes (None when the export has none)."""
  if 'hear' not in meta:
    return None
  return hear_net.from_config(ml_collections.ConfigDict(_hear_fields(meta['hear'])))


def abstract_hear(meta: dict) -> dict:
  """ShapeDtypeStruct tree {'params', 'batch_stats'} of the export's HEAR-Net."""
  size = int(meta['image_size'])
  hear = build_hear(meta)
  return _plain(jax.eval_shape(lambda: hear.init(
      jax.random.key(0), jnp.zeros((1, size, size, hear.input_channels)), train=False)))


def make_meta(config: Any, identity_meta: dict, *, source: Optional[dict] = None) -> dict:
  """swapper.json content for a training config and its identity encoder's meta."""
  from fsjax import __version__  # pylint: disable=g-import-not-at-top
  model = json.loads(config.model.to_json_best_effort()) if hasattr(
      config.model, 'to_json_best_effort') else dict(config.model)
  return {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'fsjax_version': __version__,
      'image_size': int(config.image_size),
      'model': model,
      'alignment': str(config.dataset.alignment),
      'dataset': str(config.dataset.name),  # picks `fsjax eval`'s default protocol
      'identity_crop_mode': str(config.identity.crop_mode),
      'identity': dict(identity_meta),
      'synthetic_media_marking': 'IPTC DigitalSourceType trainedAlgorithmicMedia',
      'source': dict(source or {}),
  }


def write_export(output_dir: str, meta: dict, generator_variables: Any,
                 identity_variables: Any, *, overwrite: bool = False,
                 inputs: Sequence[str] = (), discriminator_variables: Any = None,
                 hear_variables: Any = None) -> str:
  """Writes an export directory atomically (temporary sibling, renamed when complete).

  Args:
    output_dir: destination; must not exist unless overwrite.
    meta: swapper.json content (see make_meta).
    generator_variables: {'params', 'batch_stats'?} of the AEINet (EMA params).
    identity_variables: {'params', 'batch_stats'} of the identity encoder.
    overwrite: replace an existing output_dir that is an earlier export (has swapper.json).
    inputs: what the export was read from; output_dir must not overlap them.
    discriminator_variables: {'params', 'batch_stats'?} of the training-side discriminator
      that meta['discriminator'] describes (module docstring), or None.
    hear_variables: {'params', 'batch_stats'} of the HEAR-Net meta['hear'] describes, or None.

  Returns:
    output_dir (absolute).

  Raises:
    paths.OutputError: output_dir overlaps an input, exists without overwrite, or is not
      an earlier export.
  """
  output_dir = paths.check_output_dir(output_dir, inputs, marker=META_FILE, kind='export',
                                      overwrite=overwrite)
  tree = {'generator': _plain(_to_numpy(generator_variables)),
          'identity': _plain(_to_numpy(identity_variables))}
  expected = abstract_variables(meta)
  _check_shapes(expected, tree, 'export')
  if (discriminator_variables is None) != ('discriminator' not in meta):
    raise ExportError("meta['discriminator'] and discriminator_variables go together")
  if discriminator_variables is not None:
    d_tree = {k: v for k, v in _plain(_to_numpy(discriminator_variables)).items() if v}
    _check_shapes(abstract_discriminator(meta), d_tree, 'discriminator')
  if (hear_variables is None) != ('hear' not in meta):
    raise ExportError("meta['hear'] and hear_variables go together")
  if hear_variables is not None:
    hear_tree = _plain(_to_numpy(hear_variables))
    _check_shapes(abstract_hear(meta), hear_tree, 'HEAR-Net')
  with paths.atomic_dir(output_dir) as tmp:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, VARIABLES_DIR), tree)
    if discriminator_variables is not None:
      checkpointer.save(os.path.join(tmp, DISCRIMINATOR_DIR), d_tree)
    if hear_variables is not None:
      checkpointer.save(os.path.join(tmp, HEAR_DIR), hear_tree)
    checkpointer.wait_until_finished()
    checkpointer.close()
    with open(os.path.join(tmp, META_FILE), 'w') as f:
      json.dump(meta, f, indent=2, sort_keys=True)
  return output_dir


def _shapes(tree: Any) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(getattr(leaf, 'shape', ())) for path, leaf in flat}


def _check_shapes(expected: Any, actual: Any, what: str) -> None:
  """Raises ExportError naming the first missing/extra/mis-shaped array."""
  want, have = _shapes(expected), _shapes(actual)
  missing = sorted(set(want) - set(have))
  extra = sorted(set(have) - set(want))
  wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
  if missing or extra or wrong:
    detail = (f'missing {missing[0]}' if missing else f'unexpected {extra[0]}' if extra else
              f'{wrong[0]} has shape {have[wrong[0]]}, the model needs {want[wrong[0]]}')
    raise ExportError(f'incompatible {what}: {len(missing)} missing, {len(extra)} unexpected, '
                      f'{len(wrong)} mis-shaped arrays ({detail})')


def _read_meta(path: str) -> dict:
  try:
    with open(os.path.join(path, META_FILE)) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ExportError(f'incompatible checkpoint directory {path}: cannot read {META_FILE} '
                      f'({e})') from e
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    raise ExportError(f'incompatible checkpoint directory {path}: {META_FILE} is not an fsjax '
                      'swapper export')
  if int(meta.get('format_version', 0)) > FORMAT_VERSION:
    raise ExportError(f'checkpoint {path} has format version {meta.get("format_version")}; '
                      f'this fsjax reads up to {FORMAT_VERSION} (upgrade fsjax)')
  for key in ('image_size', 'model', 'alignment', 'identity_crop_mode', 'identity'):
    if key not in meta:
      raise ExportError(f'incompatible checkpoint directory {path}: {META_FILE} lacks {key!r}')
  return meta


def _load_export(path: str) -> Bundle:
  meta = _read_meta(path)
  try:
    expected = abstract_variables(meta)
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f'incompatible checkpoint directory {path}: cannot build the model '
                      f'({type(e).__name__}: {e})') from e
  variables_dir = os.path.join(path, VARIABLES_DIR)
  checkpointer = ocp.StandardCheckpointer()
  try:
    stored = checkpointer.metadata(variables_dir).item_metadata.tree
    _check_shapes(expected, stored, f'checkpoint {path}')
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), expected)
    tree = checkpointer.restore(variables_dir, target)
  except ExportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f'incompatible checkpoint directory {path}: cannot restore '
                      f'{VARIABLES_DIR}/ ({type(e).__name__}: {str(e).splitlines()[0][:200]})'
                      ) from e
  finally:
    checkpointer.close()
  hear_variables = _restore_item(path, HEAR_DIR, abstract_hear(meta), 'HEAR-Net') if (
      'hear' in meta) else None
  return Bundle(generator=build_generator(meta), generator_variables=tree['generator'],
                identity_module=build_identity(meta['identity']),
                identity_variables=tree['identity'], meta=meta, hear=build_hear(meta),
                hear_variables=hear_variables)


def _restore_item(path: str, name: str, expected: Any, what: str) -> dict:
  """The optional Orbax tree PATH/NAME, shape-checked against `expected` (numpy)."""
  checkpointer = ocp.StandardCheckpointer()
  try:
    stored = checkpointer.metadata(os.path.join(path, name)).item_metadata.tree
    _check_shapes(expected, stored, f'{what} of {path}')
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), expected)
    return _to_numpy(checkpointer.restore(os.path.join(path, name), target))
  except ExportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f'incompatible checkpoint directory {path}: cannot restore {name}/ '
                      f'({type(e).__name__}: {str(e).splitlines()[0][:200]})') from e
  finally:
    checkpointer.close()


def load_discriminator(path: str) -> Optional[tuple[dict, dict]]:
  """(config.discriminator fields, {'params'[, 'batch_stats']} numpy) of an export's
  training-side discriminator, or None when it carries none."""
  meta = _read_meta(path)
  if 'discriminator' not in meta:
    return None
  tree = _restore_item(path, DISCRIMINATOR_DIR, abstract_discriminator(meta), 'discriminator')
  return dict(meta['discriminator']), tree


def is_export(path: str) -> bool:
  return os.path.isfile(os.path.join(path, META_FILE))


def is_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, 'checkpoints'))


def check_dir(path: str) -> str:
  """Cheap check of a checkpoint argument (no arrays read): 'export' or 'workdir'.

  Raises:
    ExportError: missing directory, unreadable or foreign swapper.json, a workdir without a
      finished checkpoint, or neither.
  """
  path = paths.absolute(path)
  if not os.path.isdir(path):
    raise ExportError(f'checkpoint directory not found: {path}')
  if is_export(path):
    _read_meta(path)
    return 'export'
  if is_workdir(path):
    if not checkpointing.finished_steps(path):
      raise ExportError(f'incompatible checkpoint directory {path}: no finished checkpoint '
                        'in checkpoints/')
    return 'workdir'
  raise ExportError(f'incompatible checkpoint directory {path}: neither an fsjax export '
                    f'({META_FILE}) nor a training workdir (checkpoints/)')


def load_bundle(path: str) -> Bundle:
  """Reads an export directory, or a training workdir (latest checkpoint's EMA params).

  Raises:
    ExportError: missing directory, or neither a valid export nor a workdir with a checkpoint.
  """
  path = paths.absolute(path)  # Orbax reads absolute paths only
  if check_dir(path) == 'export':
    return _load_export(path)
  return load_workdir(path)


# --------------------------------------------------------------------- workdir


def _workdir_identity(workdir: str, config: ml_collections.ConfigDict):
  """(identity variables, identity meta) of the encoder the run trained with, resolved as the
  trainer resolves it (fsjax.identity.resolve; an auto_train encoder is never trained here)."""
  try:
    found = resolve.resolve(config, workdir, train=False, dtype='float32')
  except resolve.IdentityCheckpointError as e:
    raise ExportError(f'cannot find the identity encoder of {workdir}: {e}') from None
  meta = {k: v for k, v in found.meta.items() if k != 'path'}
  return _to_numpy(found.variables), meta


def load_workdir(workdir: str, step: Optional[int] = None) -> Bundle:
  """Bundle from a training workdir: EMA generator params + batch stats, identity encoder.

  Uses the newest readable checkpoint (or `step`); unreadable newer ones are skipped with
  one UnreadableCheckpointWarning naming the step used (the workdir is not modified).
  Reads only Orbax files: no train state is built.
  """
  workdir = paths.absolute(workdir)
  steps = checkpointing.finished_steps(workdir)
  if not steps:
    raise ExportError(f'incompatible checkpoint directory {workdir}: no finished checkpoint '
                      'in checkpoints/')
  if step is not None:
    if step not in steps:
      raise ExportError(f'no checkpoint of step {step} in {workdir} (have {steps})')
    steps = [step]
  errors = []
  for candidate in reversed(steps):
    step_dir = os.path.join(workdir, 'checkpoints', str(candidate))
    try:
      config, restored = checkpointing.restore_items(workdir, candidate,
                                                     ('ema_params', 'g_batch_stats'))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'step {candidate}: {type(e).__name__}: {str(e).splitlines()[0][:200]}')
      continue
    if errors:
      warnings.warn(f'{workdir}: the newest checkpoint(s) are unreadable ({"; ".join(errors)}); '
                    f'using step {candidate}', UnreadableCheckpointWarning, stacklevel=2)
    if 'ema_params' not in restored:
      raise ExportError(f'{step_dir} holds no ema_params: not an fsjax training checkpoint')
    generator_variables = {'params': restored['ema_params']}
    if restored.get('g_batch_stats'):  # {} for generators without batch norm
      generator_variables['batch_stats'] = restored['g_batch_stats']
    config = ml_collections.ConfigDict(config)
    identity_variables, identity_meta = _workdir_identity(workdir, config)
    meta = make_meta(config, identity_meta, source={'workdir': os.path.abspath(workdir),
                                                    'step': candidate, 'params': 'ema'})
    expected = abstract_variables(meta)
    tree = {'generator': generator_variables, 'identity': _plain(identity_variables)}
    _check_shapes(expected, tree, f'checkpoint {step_dir}')
    return Bundle(generator=build_generator(meta), generator_variables=generator_variables,
                  identity_module=build_identity(identity_meta),
                  identity_variables=tree['identity'], meta=meta)
  raise ExportError(f'no readable checkpoint in {workdir}: ' + '; '.join(errors))


def export_swapper(workdir_or_checkpoint: str, output_dir: str, *, step: Optional[int] = None,
                   overwrite: bool = False, hear: Optional[str] = None) -> str:
  """Writes a self-contained export from a training workdir (or re-exports an export).

  Args:
    workdir_or_checkpoint: training workdir (latest checkpoint, or `step`) or an export dir.
    output_dir: destination directory (written atomically).
    step: checkpoint step of a workdir (default: the latest readable one).
    overwrite: replace an existing output_dir that is an earlier export (has swapper.json).
    hear: a HEAR-Net training workdir (`fsjax train-hear`) whose newest checkpoint joins the
      export as its stage 2 (default: an export's own HEAR-Net, if any, is carried along).

  Returns:
    output_dir (absolute).

  Raises:
    paths.OutputError: output_dir overlaps an input, exists without overwrite, or is not
      an earlier export (nothing is read or written then).
    ExportError: the input is not a usable workdir or export.
  """
  path = paths.absolute(workdir_or_checkpoint)
  inputs = [path] + ([paths.absolute(hear)] if hear else [])
  # Refused before any reading: an output that overlaps an input, or replaces anything
  # but an earlier export.
  paths.check_output_dir(output_dir, inputs, marker=META_FILE, kind='export',
                         overwrite=overwrite)
  discriminator = None
  if check_dir(path) == 'export':
    bundle = _load_export(path)
    discriminator = load_discriminator(path)  # carried along: fine-tuning starts from it
  else:
    bundle = load_workdir(path, step)
  meta, hear_variables = dict(bundle.meta), bundle.hear_variables
  if hear:
    hear_variables, hear_meta = _hear_workdir(inputs[1], int(meta['image_size']))
    meta['hear'] = hear_meta
  return write_export(output_dir, meta, bundle.generator_variables,
                      bundle.identity_variables, overwrite=overwrite, inputs=inputs,
                      discriminator_variables=discriminator and discriminator[1],
                      hear_variables=hear_variables)


def _hear_workdir(workdir: str, image_size: int) -> tuple[dict, dict]:
  """(HEAR-Net variables, swapper.json 'hear') of a `fsjax train-hear` workdir."""
  from fsjax.aei import hear_trainer  # pylint: disable=g-import-not-at-top
  try:
    variables, config = hear_trainer.load_hear(workdir)
  except ValueError as e:
    raise ExportError(str(e)) from None
  if int(config['image_size']) != image_size:
    raise ExportError(f'the HEAR-Net of {workdir} refines {config["image_size"]} px swaps, '
                      f'the AEI-Net swaps {image_size} px')
  return variables, dict(_hear_fields(config['hear']),
                        source={'workdir': workdir, 'step': int(config['step'])})
