"""The face-swapping API: `load_swapper(dir)` -> `Swapper` with `swap` (images) and `swap_frames`.

A Swapper holds an exported (or training-run) AEI-Net and its identity encoder. For each target
face it detects landmarks, aligns the face the way the training data was aligned, runs the
generator at its trained resolution (jit-compiled, batched over faces and frames), and pastes the
result back with a soft landmark mask and colour correction (fsjax.swap.blend). Pixels outside the
pasted masks are returned exactly as they were.

Typical use (also in Colab):

  swapper = fsjax.load_swapper('/path/to/export')
  out = swapper.swap(['me1.jpg', 'me2.jpg'], 'group.jpg', faces='all')   # uint8 [H, W, 3]
"""

import dataclasses
import os
import time
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fsjax.swap import blend
from fsjax.data import image_io
from fsjax.faces import align
from fsjax.models import arcface
from fsjax.models import hear_net

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
FaceSelection = Union[str, int]

# Alignments whose S px crops are resizes of a crop of their own size: the identity is read
# from that crop (GHOST: the 224 crop downsampled to 112, align_corners bilinear).
IDENTITY_SIZE = {'ghost224': align.GHOST_CROP}


class SwapInputError(ValueError):
  """A user input the swap cannot work with (the message is meant for the user)."""


@dataclasses.dataclass
class SwapResult:
  """What `Swapper.swap(..., return_crops=True)` returns.

  Attributes:
    image: uint8 [H, W, 3], the swapped frame.
    mask: float32 [H, W] in [0, 1], the union of the pasted blend masks (0 = untouched pixel).
    faces: the target faces that were swapped (fsjax.faces.detect.Face, frame coordinates).
    target_crops: uint8 [N, S, S, 3], the aligned target faces fed to the model.
    swapped_crops: uint8 [N, S, S, 3], the model outputs (before colour correction).
    matrices: float64 [N, 2, 3], frame -> crop alignment transforms.
  """
  image: np.ndarray
  mask: np.ndarray
  faces: list
  target_crops: np.ndarray
  swapped_crops: np.ndarray
  matrices: np.ndarray


def to_rgb(image: ImageLike, name: Optional[str] = None) -> np.ndarray:
  """Loads a path, PIL image or array as uint8 [H, W, 3] RGB; raises SwapInputError if it can't.

  Arrays may be uint8 [H, W], [H, W, 3] or [H, W, 4] (alpha dropped) or float in [0, 1].
  """
  if isinstance(image, (str, os.PathLike)):
    path = os.fspath(image)
    try:
      return image_io.load_rgb(path)
    except FileNotFoundError as e:
      raise SwapInputError(f'file not found: {path}') from e
    except IsADirectoryError as e:
      raise SwapInputError(f'not a file: {path}') from e
    except (ValueError, OSError) as e:
      raise SwapInputError(f'cannot read image {path}: {e}') from e
  if isinstance(image, Image.Image):
    return np.array(image.convert('RGB'), np.uint8)
  array = np.asarray(image)
  if np.issubdtype(array.dtype, np.floating):
    array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
  if array.dtype != np.uint8:
    raise SwapInputError(f'{name or "image"}: expected uint8 pixels, got {array.dtype}')
  if array.ndim == 2:
    array = np.repeat(array[..., None], 3, axis=-1)
  if array.ndim != 3 or array.shape[-1] not in (3, 4) or 0 in array.shape:
    raise SwapInputError(f'{name or "image"}: expected [H, W, 3] pixels, got {array.shape}')
  return np.ascontiguousarray(array[..., :3])


def _describe(image: ImageLike, index: int, role: str) -> str:
  if isinstance(image, (str, os.PathLike)):
    return os.fspath(image)
  return f'{role} image #{index}'


def parse_selection(which: FaceSelection) -> FaceSelection:
  """'largest' | 'all' | a face index (int or digit string) -> 'largest' | 'all' | int."""
  if isinstance(which, str) and which.strip().isdigit():
    return int(which)
  if which in ('largest', 'all') or (isinstance(which, (int, np.integer)) and
                                     not isinstance(which, bool) and which >= 0):
    return which if isinstance(which, str) else int(which)
  raise SwapInputError(f"faces must be 'largest', 'all' or a face index >= 0, got {which!r}")


def select_faces(faces: Sequence[Any], which: FaceSelection) -> list:
  """Picks target faces: 'largest', 'all', or an index in the detector's order (largest first).

  The order is that of fsjax.faces.detect (largest box first), the same `face_index` that
  `fsjax align` reports.

  Raises:
    SwapInputError: an index that does not exist, or an unknown selection.
  """
  which = parse_selection(which)
  ordered = sorted(faces, key=lambda f: -f.area)
  if which == 'all':
    return ordered
  if which == 'largest':
    return ordered[:1]
  if which >= len(ordered):
    raise SwapInputError(f'face index {which} out of range: the target has {len(ordered)} '
                         f'face(s) (indices 0..{len(ordered) - 1}, largest first)')
  return [ordered[which]]


def source_face(detector: Any, image: np.ndarray, name: str = 'source image') -> Any:
  """The largest face of a source photo uint8 [H, W, 3]; SwapInputError when there is none."""
  faces = detector.detect(image)
  if not faces:
    raise SwapInputError(f'no face found in source {name}')
  return select_faces(faces, 'largest')[0]


def target_faces(detector: Any, image: np.ndarray, which: FaceSelection = 'largest',
                 name: str = 'target image') -> list:
  """Detects and selects the faces to replace in uint8 [H, W, 3].

  Raises:
    SwapInputError: no face, or a face index that does not exist.
  """
  faces = detector.detect(image)
  if not faces:
    raise SwapInputError(f'no face found in target {name}')
  return select_faces(faces, which)


def _bucket(n: int, max_batch: int) -> int:
  """Padded batch size for n items: the next power of two, at most max_batch."""
  size = 1
  while size < n and size < max_batch:
    size *= 2
  return min(size, max_batch)


class Swapper:
  """A loaded face swapper (generator + identity encoder + face detector).

  Attributes:
    image_size: the model's resolution S (aligned crops are S x S).
    alignment: 'ffhq' | 'arcface' | 'ghost224', how faces are aligned (as in the training
      data; 'ghost224' = GHOST's 224 crop, resized to S for the generator).
    identity_crop_mode: 'resize' | 'crop_19_237', how the identity encoder reads a crop.
    identity_size: side of the aligned source crops the identity is read from: S, or 224
      for 'ghost224' (GHOST reads it from the 224 crop, not from its resize to S).
    id_normalize: the generator takes unit-norm identity vectors (config.model.id_normalize;
      False for GHOST's weights: the raw embedding).
    meta: the export's swapper.json content.
    generator_variables: the AEI-Net variables on the device ({'params', 'batch_stats'}).
    identity_variables: the identity encoder's variables on the device.
    has_hear: the export carries a HEAR-Net (stage 2).
    use_hear: apply it (default True when present); the `hear=` argument of swap, swap_frames
      and generate overrides it per call.
  """

  def __init__(self, generator: Any, generator_variables: Any, identity_module: Any,
               identity_variables: Any, meta: dict, *, detector: Any = None,
               batch_size: int = 32, mask_blur: float = 0.05, mask_erosion: float = 0.05,
               color_correction: float = 1.0, hear: Any = None,
               hear_variables: Any = None):
    """Builds a swapper from modules and variables (use `load_swapper` to read a directory).

    Args:
      generator: AEINet module.
      generator_variables: {'params', 'batch_stats'?} for the generator (EMA params).
      identity_module: IResNet module.
      identity_variables: {'params', 'batch_stats'} of the identity encoder.
      meta: dict with image_size, alignment, identity_crop_mode (see fsjax.swap.export).
      detector: face detector with `detect(uint8 [H, W, 3]) -> list[Face]`; default dlib.
      batch_size: largest model batch (faces/frames are padded to powers of two up to it).
      mask_blur: default blend-mask blur (fraction of the face size).
      mask_erosion: default blend-mask erosion (fraction of the face size).
      color_correction: strength of the LAB colour transfer toward the target skin, in [0, 1].
      hear, hear_variables: the HEAR-Net module and its variables (export 'hear'), or None.
    """
    from fsjax.swap import export  # pylint: disable=g-import-not-at-top
    self.meta = dict(meta)
    self.image_size = int(meta['image_size'])
    self.alignment = meta['alignment']
    self.identity_crop_mode = meta['identity_crop_mode']
    self.identity_size = IDENTITY_SIZE.get(self.alignment, self.image_size)
    self.id_normalize = bool(export.model_config(meta).model.id_normalize)
    self.batch_size = int(batch_size)
    self.mask_blur = float(mask_blur)
    self.mask_erosion = float(mask_erosion)
    self.color_correction = float(color_correction)
    self._detector = detector
    self.generator_variables = jax.device_put(generator_variables)
    self.identity_variables = jax.device_put(identity_variables)
    crop_mode = self.identity_crop_mode

    def generate(variables, crops, z_id):
      x = crops.astype(jnp.float32) / 127.5 - 1.0
      y, _ = generator.apply(variables, x, z_id, train=False)
      return jnp.clip((y.astype(jnp.float32) + 1.0) * 127.5, 0.0, 255.0)

    def embed_raw(variables, crops):
      x = crops.astype(jnp.float32) / 127.5 - 1.0
      return identity_module.apply(variables, arcface.identity_crop(x, crop_mode), train=False)

    def embed(variables, crops):
      e = embed_raw(variables, crops)
      return e / jnp.linalg.norm(e, axis=-1, keepdims=True).clip(1e-12)

    self._generate = jax.jit(generate)
    self._embed = jax.jit(embed)
    self._embed_raw = jax.jit(embed_raw)
    self.has_hear = hear is not None
    self.use_hear = self.has_hear
    if self.has_hear:
      self.hear_variables = jax.device_put(hear_variables)
      id_normalize = self.id_normalize

      def refine(variables, crops, z_id):
        # HEAR-Net input: the swap and the target's heuristic error X_t - AEI(X_t, z_id(X_t))
        # (and X_t itself for a HEAR-Net with target_input).
        g_vars, id_vars, hear_vars = variables
        x = crops.astype(jnp.float32) / 127.5 - 1.0
        y_hat, _ = generator.apply(g_vars, x, z_id, train=False)
        z_t = (embed if id_normalize else embed_raw)(id_vars, crops)
        recon, _ = generator.apply(g_vars, x, z_t, train=False)
        y = hear.apply(hear_vars, hear_net.input_of(hear, y_hat.astype(jnp.float32),
                                                     x - recon, x), train=False)
        return jnp.clip((y + 1.0) * 127.5, 0.0, 255.0)

      self._refine = jax.jit(refine)

  # ------------------------------------------------------------------ faces

  @property
  def detector(self):
    if self._detector is None:
      from fsjax.faces import detect  # pylint: disable=g-import-not-at-top
      self._detector = detect.DlibDetector()
    return self._detector

  def detect(self, image: np.ndarray) -> list:
    """Faces in uint8 [H, W, 3] (fsjax.faces.detect.Face list)."""
    return list(self.detector.detect(image))

  def align(self, image: np.ndarray, face: Any) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop uint8 [S, S, 3] and frame -> crop matrix [2, 3], as in the training data."""
    crop, matrix = align.align_face(image, face, self.alignment, self.image_size)
    return np.asarray(crop, np.uint8), np.asarray(matrix, np.float64)

  def align_identity(self, image: np.ndarray, face: Any) -> np.ndarray:
    """The aligned source crop the identity is read from, uint8 [identity_size, ..., 3]."""
    if self.identity_size == self.image_size:
      return self.align(image, face)[0]
    crop, _ = align.align_face(image, face, self.alignment, self.identity_size)
    return np.asarray(crop, np.uint8)

  # ------------------------------------------------------------------ model

  def _run_batched(self, fn, variables, crops: np.ndarray, *extra: np.ndarray) -> np.ndarray:
    """Runs fn over crops [N, ...] in padded power-of-two batches (bounded recompiles)."""
    outputs = []
    n = len(crops)
    for start in range(0, n, self.batch_size):
      chunk = [a[start:start + self.batch_size] for a in (crops,) + extra]
      size = _bucket(len(chunk[0]), self.batch_size)
      pad = size - len(chunk[0])
      if pad:
        chunk = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in chunk]
      out = np.asarray(fn(variables, *chunk))
      outputs.append(out[:size - pad])
    return np.concatenate(outputs, axis=0)

  def embed_crops(self, crops: np.ndarray) -> np.ndarray:
    """The generator's identity input z_id [N, D] of aligned crops uint8 [N, s, s, 3]: unit
    norm, or the raw embedding when not id_normalize (GHOST)."""
    if self.id_normalize:
      return self.unit_embeddings(crops)
    return self._run_batched(self._embed_raw, self.identity_variables,
                             np.asarray(crops, np.uint8))

  def unit_embeddings(self, crops: np.ndarray) -> np.ndarray:
    """L2-normalised identity embeddings [N, D] of aligned crops uint8 [N, s, s, 3] (for
    cosine scores, whatever id_normalize)."""
    return self._run_batched(self._embed, self.identity_variables, np.asarray(crops, np.uint8))

  def generate(self, crops: np.ndarray, z_id: np.ndarray,
               hear: Optional[bool] = None) -> np.ndarray:
    """The model alone: aligned targets uint8 [N, S, S, 3] + identity [D] or [N, D].

    With a HEAR-Net (has_hear) and `hear` (None: use_hear), AEI-Net's swaps are refined by it
    (stage 2).

    Returns:
      float32 [N, S, S, 3] in [0, 255].
    """
    crops = np.asarray(crops, np.uint8)
    z_id = np.asarray(z_id, np.float32)
    if z_id.ndim == 1:
      z_id = np.broadcast_to(z_id, (len(crops), z_id.shape[0]))
    if self.has_hear and (self.use_hear if hear is None else hear):
      return self._run_batched(
          self._refine, (self.generator_variables, self.identity_variables,
                         self.hear_variables), crops, np.ascontiguousarray(z_id))
    return self._run_batched(self._generate, self.generator_variables, crops,
                             np.ascontiguousarray(z_id))

  def identity(self, source: Union[ImageLike, Sequence[ImageLike]],
               names: Optional[Sequence[str]] = None,
               detected: Optional[Sequence[Any]] = None) -> np.ndarray:
    """The source identity z_id: the largest face of each photo, embedded and combined.

    With id_normalize: the mean of the unit embeddings, renormalised. Without (GHOST, whose
    own inference swaps several sources one at a time): one photo gives its raw embedding;
    several give the direction of the mean unit embedding at the mean raw length, so the
    generator still sees an embedding of the size it was trained on.

    Args:
      source: a path, PIL image or uint8 array, or a list of them (photos of one person); a
        float vector [D] is taken as an identity already computed (normalised when
        id_normalize, else returned as it is).
      names: how to call the sources in error messages (default: their paths or indices).
      detected: the face to use in each source, when already detected (see `source_face`).

    Returns:
      float32 [D] (unit norm when id_normalize).

    Raises:
      SwapInputError: an unreadable source or one without a face.
    """
    if isinstance(source, np.ndarray) and source.ndim == 1:
      z = source.astype(np.float32)
      return z / max(float(np.linalg.norm(z)), 1e-12) if self.id_normalize else z
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
      raise SwapInputError('no source image given')
    crops = []
    for i, item in enumerate(sources):
      name = names[i] if names else _describe(item, i, 'source')
      image = to_rgb(item, name)
      face = detected[i] if detected else source_face(self.detector, image, name)
      crops.append(self.align_identity(image, face))
    embeddings = self.embed_crops(np.stack(crops))
    if not self.id_normalize:
      if len(embeddings) == 1:
        return embeddings[0].astype(np.float32)
      lengths = np.linalg.norm(embeddings, axis=-1, keepdims=True)
      z = (embeddings / np.maximum(lengths, 1e-12)).mean(axis=0)
      z *= lengths.mean() / max(float(np.linalg.norm(z)), 1e-12)
      return z.astype(np.float32)
    z = embeddings.mean(axis=0)
    return (z / max(float(np.linalg.norm(z)), 1e-12)).astype(np.float32)

  # ------------------------------------------------------------------ swapping

  def paste_face(self, frame: np.ndarray, face: Any, crop: np.ndarray, swapped: np.ndarray,
                 matrix: np.ndarray, mask_blur: float, mask_erosion: float,
                 frame_mask: Optional[np.ndarray] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """One face back into its frame: landmark mask, colour match toward the target crop, paste.

    Args:
      frame: uint8 [H, W, 3] (not modified); face: its detect.Face (frame coordinates).
      crop: uint8 [S, S, 3], the aligned target; swapped: [S, S, 3] in [0, 255], the model's.
      matrix: [2, 3] frame -> crop; mask_blur, mask_erosion: fractions of the face size.
      frame_mask: optional float32 [H, W], max-combined with the warped mask in place.
      out: written instead of a copy of the frame (may be `frame`: pasted in place).

    Returns:
      uint8 [H, W, 3].
    """
    landmarks = align.transform_points(matrix, face.landmarks68)
    mask = blend.face_mask(landmarks, self.image_size, erosion=mask_erosion, blur=mask_blur)
    corrected = blend.match_color(swapped, crop, mask, self.color_correction)
    return blend.paste(frame, corrected, mask, matrix, frame_mask=frame_mask, out=out)

  def _swap_faces(self, frames: Sequence[np.ndarray], faces_per_frame: Sequence[list],
                  z_id: np.ndarray, mask_blur: float, mask_erosion: float,
                  hear: Optional[bool] = None):
    """Aligns, generates (one batch for all faces of all frames) and pastes back."""
    jobs = [(i, face) for i, faces in enumerate(faces_per_frame) for face in faces]
    outputs = [np.array(f, copy=True) for f in frames]
    masks = [np.zeros(f.shape[:2], np.float32) for f in frames]
    size = self.image_size
    if not jobs:
      empty = np.zeros((0, size, size, 3), np.uint8)
      return outputs, masks, empty, empty, np.zeros((0, 2, 3))
    aligned = [self.align(frames[i], face) for i, face in jobs]
    crops = np.stack([c for c, _ in aligned])
    matrices = np.stack([m for _, m in aligned])
    swapped = self.generate(crops, z_id, hear=hear)
    for (i, face), crop, out, matrix in zip(jobs, crops, swapped, matrices):
      outputs[i] = self.paste_face(outputs[i], face, crop, out, matrix, mask_blur, mask_erosion,
                                   frame_mask=masks[i])
    swapped_u8 = np.clip(np.rint(swapped), 0, 255).astype(np.uint8)
    return outputs, masks, crops, swapped_u8, matrices

  def swap(self, source: Union[ImageLike, Sequence[ImageLike], np.ndarray], target: ImageLike,
           *, faces: Union[FaceSelection, Sequence[Any]] = 'largest',
           mask_blur: Optional[float] = None, mask_erosion: Optional[float] = None,
           return_crops: bool = False, target_name: Optional[str] = None,
           hear: Optional[bool] = None) -> Union[np.ndarray, SwapResult]:
    """Puts the source identity on face(s) of the target image.

    Args:
      source: photo(s) of the source person (path / PIL / uint8 array, or a list: their
        identity embeddings are averaged), or an identity from `identity()`.
      target: the image whose face(s) are replaced.
      faces: 'largest' (default), 'all', the index of one face (largest first), or a list of
        faces (from `target_faces` or `detect`).
      mask_blur: blend-mask Gaussian sigma as a fraction of the face size (default 0.05).
      mask_erosion: blend-mask erosion as a fraction of the face size (default 0.05).
      return_crops: return a SwapResult (image, mask, faces, aligned crops) instead of the image.
      target_name: how to call the target in error messages.
      hear: refine with the export's HEAR-Net when it has one (False: AEI-Net alone;
        None: `use_hear`).

    Returns:
      uint8 [H, W, 3] of the target's size (or a SwapResult); pixels outside the mask unchanged.

    Raises:
      SwapInputError: unreadable input, no face in a source or in the target, bad face index.
    """
    target_name = target_name or _describe(target, 0, 'target')
    target_image = to_rgb(target, target_name)
    if isinstance(faces, (list, tuple)):
      chosen = list(faces)
    else:
      chosen = target_faces(self.detector, target_image, faces, target_name)
    z_id = self.identity(source)
    blur = self.mask_blur if mask_blur is None else float(mask_blur)
    erosion = self.mask_erosion if mask_erosion is None else float(mask_erosion)
    outputs, masks, crops, swapped, matrices = self._swap_faces(
        [target_image], [chosen], z_id, blur, erosion, hear)
    if not return_crops:
      return outputs[0]
    return SwapResult(image=outputs[0], mask=masks[0], faces=chosen, target_crops=crops,
                      swapped_crops=swapped, matrices=matrices)

  def swap_frames(self, source: Union[ImageLike, Sequence[ImageLike], np.ndarray],
                  frames: Union[np.ndarray, Sequence[np.ndarray]], *,
                  faces: FaceSelection = 'largest', mask_blur: Optional[float] = None,
                  mask_erosion: Optional[float] = None, tracker: Any = None,
                  hear: Optional[bool] = None) -> tuple[np.ndarray, list[int]]:
    """Swaps a batch of video frames (all faces of all frames in one model batch).

    Args:
      source: as in `swap`; pass `identity(...)` once for a whole video.
      frames: uint8 [N, H, W, 3].
      faces: 'largest', 'all' or an index (largest first); frames where the index does not
        exist are passed through.
      mask_blur, mask_erosion, hear: as in `swap`.
      tracker: optional fsjax.swap.video.FaceTracker that smooths landmarks across calls.

    Returns:
      (uint8 [N, H, W, 3], faces swapped per frame); frames with 0 faces are returned unchanged.
    """
    frames = [np.asarray(f, np.uint8) for f in frames]
    faces = parse_selection(faces)
    z_id = self.identity(source)
    selected = []
    for frame in frames:
      detected = self.detect(frame)
      if tracker is not None:
        detected = tracker.update(detected)
      if isinstance(faces, int) and faces >= len(detected):
        selected.append([])  # that face is not in this frame: pass it through
      else:
        selected.append(select_faces(detected, faces))
    blur = self.mask_blur if mask_blur is None else float(mask_blur)
    erosion = self.mask_erosion if mask_erosion is None else float(mask_erosion)
    outputs, _, _, _, _ = self._swap_faces(frames, selected, z_id, blur, erosion, hear)
    return np.stack(outputs) if outputs else np.zeros((0, 0, 0, 3), np.uint8), [
        len(s) for s in selected]


def load_swapper(path: str, **kwargs) -> Swapper:
  """Loads a Swapper from an export directory or a training workdir (latest EMA params).

  Args:
    path: directory written by `fsjax export` (has swapper.json), or a training workdir.
    **kwargs: Swapper options (detector, batch_size, mask_blur, mask_erosion, color_correction).

  Raises:
    SwapInputError: missing directory, or one that is neither a valid export nor a workdir.
  """
  from fsjax.swap import export  # pylint: disable=g-import-not-at-top
  bundle = export.load_bundle(path)
  return Swapper(bundle.generator, bundle.generator_variables, bundle.identity_module,
                 bundle.identity_variables, bundle.meta, hear=bundle.hear,
                 hear_variables=bundle.hear_variables, **kwargs)


class PassThroughSwapper(Swapper):
  """A Swapper whose "generator" returns the aligned target crop: no model, no weights.

  Everything around the model runs as in a real swap (detection, tracking, alignment, colour
  match, paste-back), so `fsjax bench --mode video --null_model` times the face pipeline alone.
  """

  def __init__(self, image_size: int = 256, alignment: str = 'ffhq', *, detector: Any = None,
               batch_size: int = 8, mask_blur: float = 0.05, mask_erosion: float = 0.05,
               color_correction: float = 1.0):
    # pylint: disable=super-init-not-called
    self.meta = {'image_size': int(image_size), 'alignment': alignment,
                 'identity_crop_mode': 'resize', 'null_model': True}
    self.image_size = int(image_size)
    self.alignment = alignment
    self.identity_crop_mode = 'resize'
    self.identity_size = self.image_size
    self.id_normalize = True
    self.batch_size = int(batch_size)
    self.mask_blur = float(mask_blur)
    self.mask_erosion = float(mask_erosion)
    self.color_correction = float(color_correction)
    self._detector = detector
    self.has_hear = self.use_hear = False

  def generate(self, crops: np.ndarray, z_id: np.ndarray,
               hear: Optional[bool] = None) -> np.ndarray:
    """float32 [N, S, S, 3]: the crops themselves."""
    del z_id, hear
    return np.asarray(crops, np.float32)

  def identity(self, source: Any = None, names: Any = None, detected: Any = None) -> np.ndarray:
    """A fixed unit vector (the pass-through ignores the identity)."""
    return np.ones(1, np.float32)


def random_swapper(config: Any, *, seed: int = 0, **kwargs) -> Swapper:
  """A Swapper with random weights for a training config (its sizes, alignment and identity
  encoder layout, `fsjax.identity.resolve.layout`).

  For throughput measurements (`measure_swap`) without a trained checkpoint.
  """
  # pylint: disable=g-import-not-at-top
  from fsjax.identity import resolve
  from fsjax.models import random_weights
  from fsjax.swap import export
  identity = resolve.random_encoder(config)
  meta = export.make_meta(config, identity.meta, source={'random_seed': seed})
  abstract = export.abstract_variables(meta)
  return Swapper(export.build_generator(meta),
                 random_weights.random_variables(abstract['generator'], seed),
                 identity.module, identity.variables, meta, **kwargs)


def measure_swap(swapper: Swapper, batch: int, *, target: Optional[np.ndarray] = None,
                 source: Optional[np.ndarray] = None, repeats: int = 3,
                 end_to_end_repeats: int = 1) -> dict:
  """Throughput of a swapper on this machine, after a warm-up (compilation) run.

  Args:
    swapper: a loaded Swapper (its batch_size should be >= batch for one model call).
    batch: number of faces per call (model only) and of frames per call (end to end).
    target: uint8 [H, W, 3] frame with one face (default skimage.data.astronaut()).
    source: source photo (default: the target itself).
    repeats: timed model calls averaged.
    end_to_end_repeats: timed end-to-end calls averaged (detection dominates; 0 skips them).

  Returns:
    {'batch', 'image_size', 'model_swaps_per_s', 'detect_ms_per_frame',
    'end_to_end_swaps_per_s'}; the model figure times `generate` on aligned crops, the
    end-to-end one `swap_frames` (detection, alignment, model, colour correction, paste-back)
    on `batch` copies of the target.
  """
  if target is None:
    import skimage.data  # pylint: disable=g-import-not-at-top
    target = skimage.data.astronaut()
  target = to_rgb(target)
  z_id = swapper.identity(source if source is not None else target)
  face = select_faces(swapper.detect(target), 'largest')
  if not face:
    raise SwapInputError('no face in the benchmark target')
  crop = swapper.align(target, face[0])[0]
  crops = np.repeat(crop[None], batch, axis=0)

  def timed(fn, n):
    fn()  # warm-up / compile
    start = time.perf_counter()
    for _ in range(n):
      fn()
    return (time.perf_counter() - start) / n

  result = {'batch': batch, 'image_size': swapper.image_size,
            'model_swaps_per_s': batch / timed(lambda: swapper.generate(crops, z_id), repeats)}
  start = time.perf_counter()
  swapper.detect(target)
  result['detect_ms_per_frame'] = 1000 * (time.perf_counter() - start)
  if end_to_end_repeats > 0:
    frames = np.repeat(target[None], batch, axis=0)
    e2e_s = timed(lambda: swapper.swap_frames(z_id, frames), end_to_end_repeats)
    result['end_to_end_swaps_per_s'] = batch / e2e_s
  return result
