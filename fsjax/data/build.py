"""Builds fsjax's TFDS datasets as array_record without TensorFlow (`build_dataset`).

Used by `fsjax build` and by the trainers, which build synthetic_faces/64 on first use.
"""

import contextlib
import importlib
import logging
import os
import time
from typing import Optional

# fsjax's builders live in tfds_builders/<name>/; importing the package registers them.
FSJAX_DATASETS = ('synthetic_faces', 'aligned_faces')


class DatasetError(ValueError):
  """A dataset that cannot be read or built; the message says what to do."""


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS warns about every missing version folder while a builder is only looked up."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def register(name: str) -> bool:
  """Imports the fsjax builder package of dataset `name[/config][:version]` (registers it with
  TFDS). Returns False when the name is not an fsjax dataset."""
  base = name.split('/')[0].split(':')[0]
  if base not in FSJAX_DATASETS:
    return False
  importlib.import_module(f'tfds_builders.{base}')
  return True


def get_builder(name: str, data_dir: Optional[str] = None, **kwargs):
  """The TFDS builder of `name` ('synthetic_faces/64', 'aligned_faces/folder', ...).

  fsjax builders write array_record unless data of another format is already prepared; other
  TFDS datasets are asked for array_record explicitly.

  Raises:
    DatasetError: unknown dataset or config (one line naming the known ones).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  fsjax_dataset = register(name)
  if not fsjax_dataset:
    kwargs.setdefault('file_format', 'array_record')
  data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
  try:
    with _quiet_tfds():
      return tfds.builder(name, data_dir=data_dir, **kwargs)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetError(f'unknown dataset {name!r}: fsjax builds '
                       f'{" and ".join(FSJAX_DATASETS)}; other names must be TFDS datasets'
                       ) from None
  except ValueError as e:
    if not fsjax_dataset or 'BuilderConfig' not in str(e):
      raise
    base = name.split('/')[0].split(':')[0]
    known = ', '.join(f'{base}/{c}' for c in tfds.builder_cls(base).builder_configs)
    raise DatasetError(f'unknown dataset config {name!r}; known: {known}') from None


def check_dataset(name: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                  *, manual_flag: str = '--manual_dir', overwrite: bool = False):
  """The builder of `name` once it is known to be prepared or buildable here; creates nothing.

  Raises:
    DatasetError: unknown dataset or config; not prepared (or `overwrite`) and not
      buildable: a dataset that needs the user's files (aligned_faces) without an existing
      manual_dir, or a TFDS dataset fsjax does not build.
  """
  builder = get_builder(name, data_dir)
  with _quiet_tfds():
    if builder.is_prepared() and not overwrite:
      return builder
  where = builder.data_dir  # <root>/<name>[/<config>]/<version>
  for _ in range(2 + (builder.builder_config is not None)):
    where = os.path.dirname(where)
  if name.split('/')[0].split(':')[0] not in FSJAX_DATASETS:
    raise DatasetError(f'{name} is not prepared in {where}; run `tfds build {name}` first')
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    if not manual_dir:
      how = (f'give {manual_flag}=DIR' if manual_flag == '--manual_dir' else
             f'build it with `fsjax build {name} --manual_dir DIR` or give {manual_flag}=DIR')
      raise DatasetError(f'{name} is not built in {where} and needs your files: {how} (see '
                         f'tfds_builders/{name.split("/")[0]}/README.md)')
    if not os.path.isdir(os.path.expanduser(manual_dir)):
      raise DatasetError(f'{manual_flag}={manual_dir}: no such folder')
  return builder


def build_dataset(name: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                  overwrite: bool = False, verbose: bool = True, **builder_kwargs):
  """Downloads/renders and prepares a dataset; a no-op when it is already prepared.

  Args:
    name: 'dataset/config', e.g. 'synthetic_faces/64' or 'aligned_faces/ffhq'.
    data_dir: TFDS data dir (default: TFDS's, ~/tensorflow_datasets).
    manual_dir: folder with the user's files for datasets that need them (aligned_faces).
    overwrite: rebuild even if prepared.
    verbose: print where the data went, its splits and the build time.
    **builder_kwargs: passed to tfds.builder, e.g. config=SyntheticFacesConfig(...) with
      custom counts (then name is just 'synthetic_faces').

  Returns:
    The prepared tfds builder (read it with `builder.as_data_source()`).

  Raises:
    DatasetError: see check_dataset (checked before anything is written).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if builder_kwargs:
    builder = get_builder(name, data_dir, **builder_kwargs)
  else:
    builder = check_dataset(name, data_dir, manual_dir, overwrite=overwrite)
  if builder.is_prepared() and not overwrite:
    return builder
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None, download_mode=mode)
  start = time.time()
  builder.download_and_prepare(download_config=config)
  if verbose:
    splits = ', '.join(f'{k}: {v.num_examples}' for k, v in builder.info.splits.items())
    print(f'{name}: prepared in {time.time() - start:.1f} s at {builder.data_dir} '
          f'({builder.info.file_format.value}; {splits})', flush=True)
  return builder


def ensure_dataset(name: str, data_dir: Optional[str] = None,
                   manual_dir: Optional[str] = None):
  """Returns the prepared builder, building it first when it is an fsjax dataset that is
  missing (synthetic_faces builds offline; aligned_faces needs manual_dir).

  Raises:
    DatasetError: see check_dataset.
  """
  builder = check_dataset(name, data_dir, manual_dir, manual_flag='--config.dataset.manual_dir')
  if builder.is_prepared():
    return builder
  print(f'{name} is not prepared yet: building it now (once).', flush=True)
  return build_dataset(name, data_dir, manual_dir)
