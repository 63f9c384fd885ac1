"""aligned_faces: aligned face crops from photos the user supplies (manual_dir).

  fsjax build aligned_faces/folder --manual_dir ~/my_faces
  tfds build tfds_builders/aligned_faces --config=ffhq --manual_dir ~/ffhq

Configs:
  ffhq, celeba_hq  already aligned images: validated (readable, square) and resized.
  vggface2, folder detect (fsjax.faces, dlib) and align (FFHQ recipe, 256 px); identity =
                   first-level sub-folder; the largest face per photo ('folder_all_faces':
                   every face).
  arcface112       112 px ArcFace 5-point crops with integer labels, for training ArcFace.

Bad files never stop a build: convertible ones (CMYK, 16-bit, grayscale, RGBA, palette) are
converted by fsjax.data.image_io.load_rgb; the rest (empty, truncated, not an image, too large,
not square, no face, face too small) are skipped and counted by reason in build_report.json,
written beside dataset_info.json and printed at the end. Directory symlinks are not followed
(counted as 'symlink loop' or 'symlink out of the folder'): a `loop -> ..` would read every
photo again under another label.
"""

import collections
import dataclasses
import json
import os
from typing import Any, Iterator, Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from fsjax.data import aligned_records
from fsjax.data import tfds_utils

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif', '.ppm',
                  '.pgm')
REPORT_NAME = 'build_report.json'
LABEL_NAMES = 'label_names.json'
_MAX_LISTED = 1000  # skipped files listed by name in the report (all are counted)
# Reasons for directory symlinks that are not followed (counted in the report).
SYMLINK_LOOP = 'symlink loop'
SYMLINK_OUTSIDE = 'symlink out of the folder'
_CHUNK = 32  # files per worker task

_INSTRUCTIONS = """\
Put your images under --manual_dir (or under --manual_dir/<config name>/, so one manual dir
can hold several configs; folder_all_faces and folder_ghost224 read folder/). Any image format Pillow reads is
accepted; sub-folders are walked recursively; bad files are skipped and counted (see
build_report.json).

ffhq:       the FFHQ aligned images (e.g. images1024x1024/00000/00000.png ... from
            https://github.com/NVlabs/ffhq-dataset). Resized to 256.
celeba_hq:  the CelebA-HQ images (e.g. CelebAMask-HQ/CelebA-HQ-img/0.jpg ... 29999.jpg).
            Optional identity labels: put CelebAMask-HQ's CelebA-HQ-to-CelebA-mapping.txt
            (or image_list.txt from progressive_growing_of_gans) and CelebA's
            identity_CelebA.txt in the same folder; else label = -1.
vggface2:   the VGGFace2 tree: train/<identity>/*.jpg and test/<identity>/*.jpg
            (https://github.com/ox-vgg/vgg_face2). Split per top folder.
folder, folder_all_faces, folder_ghost224:
            your photos; sub-folders name identities (photos directly in the folder get
            label -1). Optional train/ and test/ top folders become splits.
arcface112: an identity-per-sub-folder tree (e.g. a VGGFace2 or your own), aligned to the
            112x112 ArcFace template.
"""


@dataclasses.dataclass
class AlignedFacesConfig(tfds.core.BuilderConfig):
  """Where the faces come from and how they are cropped.

  Attributes:
    size: output side in pixels.
    alignment: 'none' (already aligned: validate + resize), 'ffhq', 'arcface' or 'ghost224'.
    labels: 'none' (label -1), 'folders' (first-level sub-folder = identity) or 'celeba'
      (CelebA identity of each CelebA-HQ image, when the mapping files are present).
    all_faces: every detected face (True) or only the largest (False).
    min_face: skip faces whose detection box is narrower than this (source pixels).
    max_pixels: skip images with more pixels than this ('image too large'); 0: the cap of
      every fsjax command, fsjax.data.image_io.pixel_cap() ($FSJAX_MAX_PIXELS, 100 Mpx).
    min_side: skip already-aligned images with a shorter side ('too small').
    subdir: the sub-folder of manual_dir read when it exists (default: the config name).
    num_workers: processes detecting and aligning in parallel, each with its own detector
      (0: the CPU count, at most 8; 1: in the building process).
  """
  size: int = 256
  alignment: str = 'ffhq'
  labels: str = 'folders'
  all_faces: bool = False
  min_face: int = 40
  max_pixels: int = 0
  min_side: int = 32
  subdir: str = ''
  num_workers: int = 0


def _config(name, description, **kwargs):
  return AlignedFacesConfig(name=name, description=description, **kwargs)


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for aligned_faces."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      _config('ffhq', 'FFHQ aligned images resized to 256.', alignment='none', labels='none'),
      _config('celeba_hq', 'CelebA-HQ images resized to 256 (CelebA identities if given).',
              alignment='none', labels='celeba'),
      _config('vggface2', 'VGGFace2 photos, largest face, FFHQ-aligned at 256, identity labels.'),
      _config('folder', 'Your photos, largest face, FFHQ-aligned at 256, sub-folder labels.'),
      _config('folder_all_faces', 'Your photos, every face, FFHQ-aligned at 256.',
              all_faces=True, subdir='folder'),
      _config('folder_ghost224', 'Your photos, largest face, GHOST-aligned (224 crop resized '
              'to 256, for fine-tuning converted GHOST weights), sub-folder labels.',
              alignment='ghost224', subdir='folder'),
      _config('arcface112', '112x112 ArcFace-aligned crops + identity labels (ArcFace training).',
              size=112, alignment='arcface'),
  ]

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    tfds_utils.prefer_array_record(self, file_format)
    self._detector = None
    self._report = {}
    self._label_names = {}

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3), encoding_format='png'),
            'label': np.int64,  # -1 when unknown
            # ArcFace-order points in crop pixels; -1 when not detected (already aligned).
            'landmarks5': tfds.features.Tensor(shape=(5, 2), dtype=np.float32),
            'source': tfds.features.Text(),  # path relative to the manual folder
        }),
        supervised_keys=('image', 'label'),
    )

  # --- Splits and files -------------------------------------------------------------------

  def _root(self, dl_manager) -> epath.Path:
    root = epath.Path(dl_manager.manual_dir)
    sub = root / (self.builder_config.subdir or self.builder_config.name)
    return sub if sub.is_dir() else root

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._root(dl_manager)
    split_roots = {name: root / name for name in ('train', 'test') if (root / name).is_dir()}
    if not split_roots:
      split_roots = {'train': root}
    offset = 0
    splits = {}
    for split, split_root in split_roots.items():
      names = []
      if self.builder_config.labels == 'folders':
        names = sorted(p.name for p in split_root.iterdir()  # as _walk: no linked folders
                       if p.is_dir() and not p.name.startswith('.')
                       and not os.path.islink(os.fspath(p)))
      self._label_names[split] = {'offset': offset, 'names': names}
      splits[split] = self._generate_examples(split, split_root, offset, names)
      offset += len(names)
    return splits

  def _generate_examples(self, split: str, split_root: epath.Path, offset: int,
                         names: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (key, example) for every usable face under split_root; counts the rest."""
    cfg = self.builder_config
    report = _SplitReport()
    self._report[split] = report
    celeba = _celeba_labels(split_root) if cfg.labels == 'celeba' else {}
    label_of = {name: offset + i for i, name in enumerate(names)}
    items, links = [], []
    for path in _walk(split_root, links):
      rel = path.relative_to(split_root).as_posix()
      if path.suffix.lower() not in IMAGE_SUFFIXES:
        report.ignored += 1
        continue
      if cfg.labels == 'folders':
        label = label_of.get(rel.split('/')[0] if '/' in rel else None, -1)
      elif cfg.labels == 'celeba':
        label = celeba.get(_digits(path.stem), -1)
      else:
        label = -1
      items.append((rel, label))
    report.merge(aligned_records.ChunkReport(
        skipped=[(path.relative_to(split_root).as_posix(), reason) for path, reason in links]))
    options = aligned_records.CropOptions(
        size=cfg.size, alignment=cfg.alignment, all_faces=cfg.all_faces,
        min_face=cfg.min_face, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
    chunks = [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]
    workers = cfg.num_workers or tfds_utils.default_num_workers()
    if cfg.alignment == 'none' or workers <= 1 or len(chunks) <= 1:
      if cfg.alignment != 'none' and self._detector is None:
        from fsjax import faces as faces_lib  # pylint: disable=g-import-not-at-top
        self._detector = faces_lib.DlibDetector()
      results = (aligned_records.crop_records(options, str(split_root), chunk, self._detector)
                 for chunk in chunks)
    else:  # Worker processes, each making its own detector per chunk.
      results = tfds_utils.ordered_map(
          aligned_records.crop_records, [(options, str(split_root), c) for c in chunks],
          workers)
    prefix = f'{split_root.name}/' if split_root.name in ('train', 'test') else ''
    for records, chunk_report in results:
      report.merge(chunk_report)
      for key, example in records:
        example['source'] = prefix + example['source']
        yield key, example

  # --- Report -----------------------------------------------------------------------------

  def _download_and_prepare(self, dl_manager, download_config):  # pylint: disable=arguments-differ
    self._report = {}
    result = super()._download_and_prepare(dl_manager, download_config)
    report = {
        'dataset': f'{self.name}/{self.builder_config.name}',
        'manual_dir': str(self._root(dl_manager)),
        'splits': {split: r.as_dict() for split, r in self._report.items()},
    }
    out_dir = epath.Path(self.data_dir)
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=1))
    if self.builder_config.labels == 'folders':
      (out_dir / LABEL_NAMES).write_text(json.dumps(self._label_names, indent=1))
    print(format_report(report), flush=True)
    return result


@dataclasses.dataclass
class _SplitReport:
  files: int = 0
  examples: int = 0
  ignored: int = 0  # files without an image suffix
  faces: int = 0
  small_faces: int = 0
  extra_faces: int = 0
  converted: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped_files: list = dataclasses.field(default_factory=list)

  def merge(self, chunk: aligned_records.ChunkReport) -> None:
    for name in ('files', 'examples', 'faces', 'small_faces', 'extra_faces'):
      setattr(self, name, getattr(self, name) + getattr(chunk, name))
    self.converted.update(chunk.converted)
    for rel, reason in chunk.skipped:
      self.skipped[reason] += 1
      if len(self.skipped_files) < _MAX_LISTED:
        self.skipped_files.append({'file': rel, 'reason': reason})

  def as_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['converted'] = dict(sorted(self.converted.items()))
    d['skipped'] = dict(sorted(self.skipped.items()))
    return d


def format_report(report: dict[str, Any]) -> str:
  """Human-readable summary of a build_report.json dict."""
  lines = [f"{report['dataset']} from {report['manual_dir']}:"]
  for split, r in report['splits'].items():
    lines.append(f"  {split}: {r['files']} image files -> {r['examples']} faces written; "
                 f"{sum(r['skipped'].values())} skipped, {r['ignored']} non-image files ignored")
    if r['converted']:
      lines.append('    converted: ' + ', '.join(f'{k} {v}' for k, v in r['converted'].items()))
    for reason, count in r['skipped'].items():
      lines.append(f'    skipped ({reason}): {count}')
    if r['small_faces'] or r['extra_faces']:
      lines.append(f"    faces below min size: {r['small_faces']}, extra faces not used "
                   f"(largest only): {r['extra_faces']}")
  return '\n'.join(lines)


def _walk(root: epath.Path, links: Optional[list] = None,
          top: Optional[str] = None) -> Iterator[epath.Path]:
  """Files under root, sorted, recursively, skipping hidden entries.

  Directory symlinks are not followed: one into the tree (or above it, `loop -> ..`) would
  read its files again, under other labels, and one out of it files that are not in the
  folder. Each is appended to `links` as (path, SYMLINK_LOOP | SYMLINK_OUTSIDE).
  """
  top = top or os.path.realpath(os.fspath(root))
  for path in sorted(root.iterdir()):
    if path.name.startswith('.'):
      continue
    if path.is_dir():
      if os.path.islink(os.fspath(path)):
        target = os.path.realpath(os.fspath(path))
        into = (target + os.sep).startswith(top + os.sep) or (top + os.sep).startswith(
            target + os.sep)
        if links is not None:
          links.append((path, SYMLINK_LOOP if into else SYMLINK_OUTSIDE))
        continue
      yield from _walk(path, links, top)
    else:
      yield path


def _digits(stem: str) -> Optional[int]:
  digits = ''.join(c for c in stem if c.isdigit())
  return int(digits) if digits else None


def _celeba_labels(root: epath.Path) -> dict[int, int]:
  """CelebA-HQ index -> CelebA identity, from the mapping files if present (else {})."""
  identity_file = next((p for p in _walk(root) if p.name == 'identity_CelebA.txt'), None)
  mapping_file = next((p for p in _walk(root) if p.name in (
      'CelebA-HQ-to-CelebA-mapping.txt', 'image_list.txt')), None)
  if identity_file is None or mapping_file is None:
    return {}
  identity = {}
  for line in identity_file.read_text().splitlines():
    parts = line.split()
    if len(parts) == 2 and parts[1].isdigit():
      identity[parts[0]] = int(parts[1])
  labels = {}
  for line in mapping_file.read_text().splitlines():
    parts = line.split()
    if len(parts) < 3 or not parts[0].isdigit():
      continue  # header
    hq_index = int(parts[0])
    orig_file = parts[2] if parts[2].endswith('.jpg') else f'{int(parts[1]) + 1:06d}.jpg'
    if orig_file in identity:
      labels[hq_index] = identity[orig_file]
  return labels
