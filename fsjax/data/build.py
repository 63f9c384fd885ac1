"""Builds fsjax's TFDS datasets as array_record without TensorFlow (`build_dataset`).

Used by `fsjax build` and by the trainers, which build synthetic_faces/64 on first use.
"""

import importlib
import os
import time
from typing import Optional

# fsjax's builders live in tfds_builders/<name>/; importing the package registers them.
FSJAX_DATASETS = ('synthetic_faces', 'aligned_faces')


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
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if not register(name):
    kwargs.setdefault('file_format', 'array_record')
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  return tfds.builder(name, data_dir=data_dir, **kwargs)


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
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = get_builder(name, data_dir, **builder_kwargs)
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
  missing (synthetic_faces builds offline; aligned_faces needs manual_dir)."""
  builder = get_builder(name, data_dir)
  if builder.is_prepared():
    return builder
  if name.split('/')[0] not in FSJAX_DATASETS:
    raise FileNotFoundError(f'{name} is not prepared in {builder.data_dir}; '
                            f'run `fsjax build {name}` (or `tfds build`) first.')
  print(f'{name} is not prepared yet: building it now (once).', flush=True)
  return build_dataset(name, data_dir, manual_dir)
