"""Grain input pipeline: face pairs for AEI-Net and labelled faces for ArcFace.

Data sources are random-access sequences of records {'image': uint8 [S, S, 3],
'label': int64 (-1 when unknown), ...}: a TFDS array_record data source (no
TensorFlow needed) or any object with `__len__` and `__getitem__`, such as
`InMemorySource` (tests, benchmarks, Colab).

Pipeline (both iterators), all randomness derived from (seed, process_index,
element position), so a restored iterator yields exactly the batches it would
have yielded:

  MapDataset.range(len(source))[process_index::process_count]  # host shard
    .shuffle(seed)            # reshuffled each epoch (seed folded with epoch)
    .repeat(num_epochs)       # None = forever
    .random_map(transform)    # reads records, picks targets, flips, jitters
    .batch(B_local)           # in the map stage, so workers emit whole batches
    .to_iter_dataset(...)     # thread prefetch (num_workers == 0)
    .mp_prefetch(...)         # or worker processes (num_workers > 0)

Because batching happens before the worker split, `num_workers` changes the
speed but not the batches.

Saving and restoring the iterator state with Orbax (one JSON file per host,
`process_{i}-of-{n}.json`, written by grain's handler):

  mngr = ocp.CheckpointManager(dir, options=...)
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(train_state),
      data_iter=input_pipeline.checkpoint_save_args(it)))
  ...
  it = input_pipeline.create_pair_iterator(config, source, seed=config.seed)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data_iter=input_pipeline.checkpoint_restore_args(it)))
  # `it` now continues where the saved one was; restored['data_iter'] is `it`.

The state is taken in `mngr.save` (synchronously, before it returns, also with
async checkpointing), so the trainer may keep iterating right after the call.
Restore into an iterator built with the same config, seed, data and hosts: the
state format depends on dataset.num_workers (0 vs > 0 vs another count), so a
run cannot change it across a restart.

Notes: call `jax.distributed.initialize()` before creating an iterator (the
default host shard comes from jax.process_index/count). num_workers > 0 starts
spawned processes: a script needs the `if __name__ == '__main__':` guard, and
grain's absl flags are marked parsed (with their defaults) when no absl app has
parsed them (pytest, Colab).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import grain
import numpy as np

from fsjax.data import build
from fsjax.train import parallel

_IMAGE_KEY = 'image'
_LABEL_KEY = 'label'
_READ_CHUNK = 256


# ----------------------------------------------------------------------------
# Data sources.


class InMemorySource:
  """A random-access source over arrays: records {'image', 'label'} (+ `fields`).

  Attributes:
    labels: int64 [N] identity labels (-1 = unknown); read by the iterators
      without decoding images.
  """

  def __init__(self, images: np.ndarray | Sequence[np.ndarray], labels=None, *,
               encode_png: bool = False, fields: dict[str, np.ndarray] | None = None):
    """Creates the source.

    Args:
      images: uint8 [N, S, S, 3] (or a list of [S, S, 3]).
      labels: int [N] identity labels, -1 for unknown; None = all unknown.
      encode_png: store PNG bytes and decode on every read (cv2), as a TFDS
        source does; used to measure a realistic pipeline without a dataset.
      fields: more per-record arrays {name: [N, ...]} (e.g. 'identity_params').
    """
    n = len(images)
    self.labels = (np.full([n], -1, np.int64) if labels is None
                   else np.asarray(labels, np.int64).reshape([n]))
    self._fields = {k: np.asarray(v) for k, v in (fields or {}).items()}
    for name, values in self._fields.items():
      if len(values) != n:
        raise ValueError(f'field {name!r} has {len(values)} rows for {n} images')
    self._encode_png = encode_png
    if encode_png:
      import cv2  # pylint: disable=g-import-not-at-top
      self._images = []
      for image in images:
        ok, buf = cv2.imencode('.png', np.ascontiguousarray(np.asarray(image)[..., ::-1]))
        if not ok:
          raise ValueError('PNG encoding failed')
        self._images.append(buf.tobytes())
    else:
      self._images = np.asarray(images, np.uint8)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(index)
    if self._encode_png:
      import cv2  # pylint: disable=g-import-not-at-top
      buf = np.frombuffer(self._images[index], np.uint8)
      image = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
      image = np.ascontiguousarray(image)
    else:
      image = self._images[index]
    record = {_IMAGE_KEY: image, _LABEL_KEY: self.labels[index]}
    record.update({k: v[index] for k, v in self._fields.items()})
    return record


class SubsetSource:
  """Records `indices` of another random-access source, in that order (e.g. the hardest
  examples HEAR-Net trains on); `labels` are the base source's labels of those records."""

  def __init__(self, source, indices: Sequence[int], labels: np.ndarray | None = None):
    self._source = source
    self.indices = np.asarray(indices, np.int64)
    base = read_labels(source) if labels is None else np.asarray(labels, np.int64)
    self.labels = base[self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._source[int(self.indices[int(index)])]


def unoccluded_subset(source) -> SubsetSource:
  """The records of a synthetic_faces source whose attributes draw no occluder.

  Reads every record's 'attribute_params' (float32 [ATTRIBUTE_DIM]) and label in one pass
  (`read_labels`' fast reader); raises ValueError when the records have no attributes
  (only synthetic_faces knows its occluders).
  """
  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  keep, labels = [], []
  for i, record in enumerate(_read_records(source, ('attribute_params', _LABEL_KEY))):
    if 'attribute_params' not in record:
      raise ValueError('dataset.drop_occluded needs records with attribute_params '
                       '(synthetic_faces); this dataset has none')
    labels.append(record.get(_LABEL_KEY, -1))
    if not synthetic_faces.draws_occluder(record['attribute_params']):
      keep.append(i)
  return SubsetSource(source, keep, np.asarray(labels, np.int64))


OWN_OCCLUDER_KEY = 'own_occluder'  # bool [S, S] of WithOwnOccluders' records


class WithOwnOccluders:
  """A synthetic_faces source whose records also carry OWN_OCCLUDER_KEY: bool [S, S], the
  pixels of the occluder (glasses, hand) the renderer drew on that very image
  (`own_occluder_masks`), so a pair's occluder_mask covers it as well as pasted ones."""

  def __init__(self, source, masks: np.ndarray):
    if len(masks) != len(source):
      raise ValueError(f'{len(masks)} masks for {len(source)} records')
    self._source = source
    self._masks = masks
    self.labels = read_labels(source)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return dict(self._source[int(index)], **{OWN_OCCLUDER_KEY: self._masks[int(index)]})


def own_occluder_masks(source, size: int, batch_size: int = 64,
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
  """bool [N, size, size]: where each synthetic_faces record's own occluder covers more than
  half a pixel, rendered again from its 'identity_params' and 'attribute_params' (the record
  image is render_batch of the same vectors at the same size, so the mask lies exactly on it).

  Records without an occluder are not rendered (all False); raises ValueError when the
  records have no parameters. progress(done, total) is called after each rendered batch.
  """
  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  ids, atts, which = [], [], []
  for i, record in enumerate(_read_records(source, ('identity_params', 'attribute_params'))):
    if 'attribute_params' not in record or 'identity_params' not in record:
      raise ValueError('dataset.own_occluder_masks needs records with identity_params and '
                       'attribute_params (synthetic_faces); this dataset has none')
    if synthetic_faces.draws_occluder(record['attribute_params']):
      ids.append(np.asarray(record['identity_params'], np.float32))
      atts.append(np.asarray(record['attribute_params'], np.float32))
      which.append(i)
  masks = np.zeros((len(source), size, size), bool)
  for start in range(0, len(which), batch_size):
    stop = min(len(which), start + batch_size)
    _, alpha = synthetic_faces.render_batch(np.stack(ids[start:stop]),
                                            np.stack(atts[start:stop]), size,
                                            return_occluder_mask=True)
    masks[which[start:stop]] = alpha > 0.5
    if progress is not None:
      progress(stop, len(which))
  return masks


def create_data_source(dataset_cfg, split: str | None = None, *, download: bool = False):
  """Returns the TFDS array_record data source named by a `config.dataset` block.

  Records are dicts {'image': uint8 [S, S, 3] (decoded from PNG by TFDS with
  OpenCV, no TensorFlow), 'label': int64 (-1 when unknown), ...}.

  Args:
    dataset_cfg: ConfigDict with `name` ('builder/config'), `data_dir` ('' =
      TFDS default), optionally `manual_dir` and `split`.
    split: TFDS split string ('train', 'test', 'train[:90%]'); default
      `dataset_cfg.split`.
    download: if True and the dataset is not prepared, run download_and_prepare
      (with `manual_dir` for the aligned_faces builder); otherwise a missing
      dataset raises with the `fsjax build` command that prepares it.
  Returns:
    A random-access source (len, __getitem__, __getitems__), picklable for workers.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = dataset_cfg.name
  split = split or dataset_cfg.split
  data_dir = dataset_cfg.data_dir or None
  build.register(name)
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
          f'TFDS dataset {name!r} is not prepared in {builder.data_dir}; run '
          f'`fsjax build {name}' + (f' --data_dir {data_dir}' if data_dir else '') + '`')
    manual_dir = dataset_cfg.manual_dir or None
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder.as_data_source(split=split)


def _read_records(source, keys: Sequence[str]):
  """Yields {key: value} for those of `keys` each record of `source` has, in order; a TFDS
  data source is read in chunks with image decoding skipped (fast)."""
  n = len(source)
  info = getattr(source, 'dataset_info', None)
  if info is not None and hasattr(source, 'split'):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    decoders = {k: tfds.decode.SkipDecoding() for k, f in info.features.items()
                if isinstance(f, tfds.features.Image)}
    fast = type(source)(dataset_info=info, split=source.split, decoders=decoders)
    for start in range(0, n, _READ_CHUNK):
      for record in fast.__getitems__(list(range(start, min(n, start + _READ_CHUNK)))):
        yield {k: record[k] for k in keys if k in record}
  else:
    for i in range(n):
      record = source[i]
      yield {k: record[k] for k in keys if k in record}


def read_labels(source) -> np.ndarray:
  """Returns int64 [N] identity labels of every record of `source` (-1 = unknown).

  Uses `source.labels` when the source has it; for a TFDS data source it reads
  the records with image decoding skipped (fast); otherwise it reads each record.
  """
  labels = getattr(source, 'labels', None)
  if labels is not None:
    return np.asarray(labels, np.int64).reshape([len(source)])
  info = getattr(source, 'dataset_info', None)
  if info is not None and _LABEL_KEY not in info.features:
    return np.full([len(source)], -1, np.int64)
  return np.asarray([r.get(_LABEL_KEY, -1) for r in _read_records(source, (_LABEL_KEY,))],
                    np.int64)


# ----------------------------------------------------------------------------
# Per-element transforms (run in worker processes: picklable, no jax).


def _color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
  """Brightness b, contrast c, saturation s, each drawn from U[1-s, 1+s]; uint8 -> uint8.

  Equivalent to x <- b x; x <- c (x - mean) + mean; x <- s (x - gray) + gray, folded into
  one affine map of (x, gray(x)) so it costs two float passes (~1.5 ms at 256 px).
  """
  import cv2  # pylint: disable=g-import-not-at-top
  b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
  mean = b * float(image.mean())
  offset = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
  offset *= (1.0 - s) * b * c
  offset += mean * (1.0 - c) + 0.5  # + 0.5: round on the final truncation
  x = image.astype(np.float32)
  x *= s * b * c
  x += offset[..., None]
  np.clip(x, 0, 255, out=x)
  return x.astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class _Augment:
  flip: bool
  color_jitter: float

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return self.with_flip(image, rng)[0]

  def with_flip(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(augmented image, whether it was mirrored); the same draws as __call__."""
    image = np.asarray(image, np.uint8)
    flipped = bool(self.flip and rng.random() < 0.5)
    if flipped:
      image = image[:, ::-1]
    image = np.ascontiguousarray(image)
    if self.color_jitter > 0:
      image = _color_jitter(image, self.color_jitter, rng)
    return image, flipped


@dataclasses.dataclass(frozen=True)
class IdentityTargets:
  """Regression targets of an identity batch: a record's parameter vector, standardised.

  Attributes:
    key: the record's float vector [P] (synthetic_faces: 'identity_params').
    mean, scale: float32 [P]; the target is (value - mean) / scale.
    mirror_sign: float32 [P], -1 where a horizontal flip of the image negates the value.
  """
  key: str
  mean: np.ndarray
  scale: np.ndarray
  mirror_sign: np.ndarray

  def __call__(self, value: np.ndarray, flipped: bool) -> np.ndarray:
    value = np.asarray(value, np.float32) * (self.mirror_sign if flipped else 1.0)
    return ((value - self.mean) / self.scale).astype(np.float32)


class _IdentityIndex:
  """label -> record indices, built once; samples same / different identities."""

  def __init__(self, labels: np.ndarray):
    self.labels = labels
    self.n = len(labels)
    known = np.flatnonzero(labels >= 0)
    self.has_labels = known.size > 0
    order = known[np.argsort(labels[known], kind='stable')]
    self._members = order  # record indices grouped by label
    self._start = np.zeros([self.n], np.int64)  # group start in _members, per record
    self._count = np.ones([self.n], np.int64)  # group size, per record (1 = alone)
    self._pos = np.zeros([self.n], np.int64)  # position of the record in its group
    if known.size:
      sorted_labels = labels[order]
      _, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
      group = np.repeat(np.arange(len(starts)), counts)
      self._start[order] = starts[group]
      self._count[order] = counts[group]
      self._pos[order] = np.arange(len(order)) - starts[group]
    self.num_distinct = len(np.unique(labels[known])) if known.size else 0

  def same(self, i: int, rng: np.random.Generator) -> int:
    """Another record of i's identity (uniform), or i when it has none / label unknown."""
    count = self._count[i]
    if count <= 1:
      return i
    r = int(rng.integers(count - 1))
    if r >= self._pos[i]:
      r += 1
    return int(self._members[self._start[i] + r])

  def different(self, i: int, rng: np.random.Generator) -> int:
    """A record other than i, of a different identity when i's label is known."""
    if self.n == 1:
      return i
    li = self.labels[i]
    for _ in range(64):
      j = int(rng.integers(self.n - 1))
      j += j >= i
      if li < 0 or self.labels[j] != li:
        return j
    return j  # pathological (almost all records share i's label): any other record


def _own_occluder(record: dict[str, Any], flipped: bool) -> np.ndarray | None:
  """The record's OWN_OCCLUDER_KEY mask [S, S], mirrored like its image; None without one."""
  own = record.get(OWN_OCCLUDER_KEY)
  if own is None:
    return None
  own = np.asarray(own, bool)
  return own[:, ::-1] if flipped else own


class _PairTransform(grain.transforms.RandomMap):
  """Record index -> {'source', 'target', 'same'} (one example of the pair batch)."""

  def __init__(self, source, index: _IdentityIndex, same_ratio: float, same_target: str,
               augment: _Augment, occlusion: Callable | None = None):
    self._source = source
    self._index = index
    self._same_ratio = float(same_ratio)
    self._same_target = same_target
    self._augment = augment
    self._occlusion = occlusion

  def random_map(self, i, rng: np.random.Generator):
    i = int(i)
    record = self._source[i]
    x_s, flip_s = self._augment.with_flip(record[_IMAGE_KEY], rng)
    if rng.random() < self._same_ratio:
      j = i if self._same_target == 'self' else self._index.same(i, rng)
    else:
      j = self._index.different(i, rng)
    if j == i:
      # Target is the source record itself: the very same pixels (same flip and
      # jitter), so X_t == X_s exactly, as the FaceShifter L_rec assumes.
      x_t, own = x_s, _own_occluder(record, flip_s)
    else:
      target = self._source[j]
      x_t, flip_t = self._augment.with_flip(target[_IMAGE_KEY], rng)
      own = _own_occluder(target, flip_t)
    mask = None
    if self._occlusion is not None:
      # X_s stays clean; a same pair's X_t is its occluded copy.
      x_t, mask = self._occlusion(x_t, rng)
    if own is not None:
      mask = own if mask is None else np.logical_or(mask, own)
    labels = self._index.labels
    same = j == i or (labels[i] >= 0 and labels[i] == labels[j])
    example = {'source': x_s, 'target': x_t, 'same': np.float32(same)}
    if mask is not None:
      example['occluder_mask'] = np.asarray(mask, np.uint8)
    return example


class _IdentityTransform(grain.transforms.RandomMap):
  """Record index -> {'image', 'label'} (ArcFace training), plus 'targets' with `targets`."""

  def __init__(self, source, labels: np.ndarray, augment: _Augment,
               targets: IdentityTargets | None = None):
    self._source = source
    self._labels = labels
    self._augment = augment
    self._targets = targets

  def random_map(self, i, rng: np.random.Generator):
    i = int(i)
    record = self._source[i]
    image, flipped = self._augment.with_flip(record[_IMAGE_KEY], rng)
    out = {'image': image, 'label': np.int32(self._labels[i])}
    if self._targets is not None:
      out['targets'] = self._targets(record[self._targets.key], flipped)
    return out


# ----------------------------------------------------------------------------
# Iterators.


def _derive_seed(seed: int, process_index: int, stream: int) -> int:
  return int(np.random.SeedSequence([int(seed), int(process_index), stream]).generate_state(1)[0])


def _host(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  return int(process_index), int(process_count)


def _build(config, data_source, transform, *, seed, process_index, process_count,
           batch_size, num_epochs, num_workers):
  """The shared shard/shuffle/repeat/map/batch/prefetch chain; returns a DatasetIterator."""
  n = len(data_source)
  if n < process_count:
    raise ValueError(f'{n} records cannot be sharded over {process_count} hosts')
  ds_cfg = config.dataset
  ds = grain.MapDataset.range(n)[process_index::process_count]
  ds = ds.shuffle(seed=_derive_seed(seed, process_index, 0))
  ds = ds.repeat(num_epochs)
  ds = ds.random_map(transform, seed=_derive_seed(seed, process_index, 1))
  ds = ds.batch(batch_size, drop_remainder=num_epochs is None)
  prefetch = int(ds_cfg.prefetch)
  workers = int(ds_cfg.num_workers if num_workers is None else num_workers)
  if workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      # grain's worker start-up reads its absl flags; outside an absl app (pytest,
      # Colab) they were never parsed, so take their defaults.
      flags.FLAGS.mark_as_parsed()
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=max(1, prefetch)))
  else:
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=prefetch,
                                                 prefetch_buffer_size=prefetch))
  return iter(it_ds)


def _check_image(data_source, image_size: int | None):
  image = np.asarray(data_source[0][_IMAGE_KEY])
  if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
    raise ValueError(f'expected images [S, S, 3], got {image.shape}')
  if image_size is not None and image.shape[0] != image_size:
    raise ValueError(f'dataset images are {image.shape[0]} px but config.image_size is '
                     f'{image_size}: pick the dataset config of that size')


def create_pair_iterator(config, data_source, *, seed: int, process_index: int | None = None,
                         process_count: int | None = None, batch_size: int | None = None,
                         num_epochs: int | None = None, num_workers: int | None = None,
                         labels: np.ndarray | None = None,
                         occlusion: Callable | None = None) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of host-local AEI-Net pair batches.

  Each element is {'source': uint8 [B_local, S, S, 3] (X_s), 'target': uint8
  [B_local, S, S, 3] (X_t), 'same': float32 [B_local]} with 'same' = 1.0 when X_t
  shows the identity of X_s (X_t is X_s itself, or an image with the same known
  label). B_local = config.per_device_batch_size * jax.local_device_count().

  Sources are this host's shard of the records (index % process_count ==
  process_index), shuffled by seed and reshuffled every epoch. Targets are
  drawn from the whole data source: with probability
  config.dataset.same_identity_ratio a same-identity target (another image of
  the same label when there is one, else X_s itself; with
  config.dataset.same_target = 'self' always X_s itself), otherwise a random
  other record, of a different label when labels are known. Each image is
  flipped horizontally with p = 0.5 (config.dataset.flip) and colour-jittered
  (config.dataset.color_jitter = strength, 0 = off), independently for X_s and
  X_t except when X_t is X_s itself: then X_t is the same pixels as X_s.

  Args:
    config: the training config (image_size, per_device_batch_size, dataset.*).
    data_source: random-access records {'image', 'label'} (`create_data_source`,
      `InMemorySource`, ...).
    seed: pipeline seed; the batches are a function of (seed, process_index,
      process_count, data, config) only.
    process_index: this host (default jax.process_index()).
    process_count: number of hosts (default jax.process_count()).
    batch_size: overrides B_local.
    num_epochs: None = forever (drops no data, batches cross epoch boundaries);
      k = stop after k passes over the shard (last batch may be short).
    num_workers: overrides config.dataset.num_workers (0 = in this process).
    labels: int [N] labels (-1 unknown); default `read_labels(data_source)`.
    occlusion: occlusion(uint8 [S, S, 3] X_t, np.random.Generator) -> (uint8 [S, S, 3], bool
      [S, S] mask of the pasted pixels), applied to every target after augmentation (HEAR-Net
      data: fsjax.data.occluders.occlude); the pair's RNG makes it deterministic like the
      rest. The batches then also hold 'occluder_mask': uint8 [B_local, S, S] (1 = pasted).
      Records with OWN_OCCLUDER_KEY (`WithOwnOccluders`) add their own occluder's pixels to
      it (flipped with the image), with or without an occlusion.
  Returns:
    A grain DatasetIterator with get_state()/set_state(); save it with Orbax via
    `checkpoint_save_args` / `checkpoint_restore_args`. Close it (`.close()`)
    when done if it uses worker processes.
  """
  process_index, process_count = _host(process_index, process_count)
  ds_cfg = config.dataset
  _check_image(data_source, config.image_size)
  labels = read_labels(data_source) if labels is None else np.asarray(labels, np.int64)
  same_ratio = float(ds_cfg.same_identity_ratio)
  if not 0.0 <= same_ratio <= 1.0:
    raise ValueError(f'dataset.same_identity_ratio must be in [0, 1], got {same_ratio}')
  same_target = ds_cfg.same_target
  if same_target not in ('other', 'self'):
    raise ValueError(f"dataset.same_target must be 'other' or 'self', got {same_target!r}")
  transform = _PairTransform(
      data_source, _IdentityIndex(labels), same_ratio, same_target,
      _Augment(bool(ds_cfg.flip), float(ds_cfg.color_jitter)), occlusion)
  return _build(config, data_source, transform, seed=seed, process_index=process_index,
                process_count=process_count, batch_size=batch_size or parallel.local_batch_size(
                    None, config.per_device_batch_size),
                num_epochs=num_epochs, num_workers=num_workers)


def create_identity_iterator(config, data_source, *, seed: int, process_index: int | None = None,
                             process_count: int | None = None, batch_size: int | None = None,
                             num_epochs: int | None = None, num_workers: int | None = None,
                             labels: np.ndarray | None = None,
                             targets: IdentityTargets | None = None) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of labelled face batches (ArcFace).

  Each element is {'image': uint8 [B_local, S, S, 3], 'label': int32 [B_local]}
  (labels in [0, num_classes)), sharded, shuffled, flipped (config.dataset.flip)
  and jittered (config.dataset.color_jitter) like `create_pair_iterator`, with
  the same arguments and the same state/Orbax story. Every record needs a label.
  The image size is not checked against config.image_size (ArcFace sets use 112).
  With `targets`, elements add 'targets' float32 [B_local, P] (the records' targets.key,
  sign-corrected for flips and standardised); the images and labels are the same.
  """
  process_index, process_count = _host(process_index, process_count)
  ds_cfg = config.dataset
  _check_image(data_source, None)
  labels = read_labels(data_source) if labels is None else np.asarray(labels, np.int64)
  if (labels < 0).any():
    raise ValueError(f'{int((labels < 0).sum())} records have no identity label; '
                     'an identity dataset needs a label on every record')
  if targets is not None and len(data_source):
    value = data_source[0].get(targets.key)
    if value is None or np.shape(value) != np.shape(targets.mean):
      raise ValueError(f"records have no '{targets.key}' of shape {np.shape(targets.mean)} "
                       f'(got {None if value is None else np.shape(value)})')
  transform = _IdentityTransform(
      data_source, labels, _Augment(bool(ds_cfg.flip),
                                    float(ds_cfg.color_jitter)), targets)
  return _build(config, data_source, transform, seed=seed, process_index=process_index,
                process_count=process_count, batch_size=batch_size or parallel.local_batch_size(
                    None, config.per_device_batch_size),
                num_epochs=num_epochs, num_workers=num_workers)


# ----------------------------------------------------------------------------
# Checkpointing (Orbax) and throughput.


def checkpoint_save_args(iterator: grain.DatasetIterator):
  """Orbax save args for the iterator state; an item of `ocp.args.Composite(...)`."""
  return grain.checkpoint.CheckpointSave(iterator)


def checkpoint_restore_args(iterator: grain.DatasetIterator):
  """Orbax restore args: restoring sets `iterator` (freshly created, same config/seed/host) to
  the saved position; the restored item is that same iterator."""
  return grain.checkpoint.CheckpointRestore(iterator)


def measure_pipeline(config, data_source, num_batches: int, *, warmup_batches: int = 2,
                     seed: int = 0, **iterator_kwargs) -> float:
  """Returns the examples per second `create_pair_iterator` sustains on this host.

  One example is one (X_s, X_t) pair, i.e. one row of the training batch (two
  records read and decoded). Counts B_local * num_batches after `warmup_batches`
  (worker start-up and first prefetch excluded).

  Args:
    config: training config (per_device_batch_size, dataset.num_workers, ...).
    data_source: records as for `create_pair_iterator`.
    num_batches: timed batches.
    warmup_batches: untimed batches first.
    seed: pipeline seed.
    **iterator_kwargs: passed to `create_pair_iterator` (batch_size, num_workers...).
  """
  it = create_pair_iterator(config, data_source, seed=seed, **iterator_kwargs)
  try:
    batch = None
    for _ in range(warmup_batches):
      batch = next(it)
    start = time.perf_counter()
    count = 0
    for _ in range(num_batches):
      batch = next(it)
      count += batch['source'].shape[0]
    return count / (time.perf_counter() - start)
  finally:
    it.close()

