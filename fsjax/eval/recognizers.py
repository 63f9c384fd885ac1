"""Identity embedders for scoring swaps: fsjax identity checkpoints and dlib's descriptor.

Two shapes of embedder:
- `CropEmbedder` (synthetic protocol): aligned crops uint8 [N, S, S, 3] -> unit [N, D];
  `crop_embedder(dir, crop_mode)` makes one from an identity checkpoint.
- `FaceEmbedder` (real faces): (frame uint8 [H, W, 3], detected Face) -> unit [D];
  `dlib_embedder` (dlib's 128-d ResNet descriptor, fsjax.faces.recognize) and
  `identity_face_embedder(dir)` (an fsjax identity checkpoint: the face is aligned the way
  its identity.json says it was trained, 'ffhq' or 'arcface', at 112 px).
"""

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

CropEmbedder = Callable[[np.ndarray], np.ndarray]
FaceEmbedder = Callable[[np.ndarray, Any], np.ndarray]
DLIB = 'dlib'


def crop_embedder(identity_dir: str, crop_mode: str, batch_size: int = 64) -> CropEmbedder:
  """An embedder for aligned faces uint8 [N, S, S, 3] from an identity checkpoint dir.

  The S px face is cut to the 112 ArcFace input with `identity_crop(mode=crop_mode)`;
  returns L2-normalised float32 [N, D]. Batches are padded to `batch_size` (one compile).
  """
  from fsjax.identity import checkpoint as identity  # pylint: disable=g-import-not-at-top
  from fsjax.models import arcface  # pylint: disable=g-import-not-at-top
  module, variables, _ = identity.load_identity(identity_dir)

  @jax.jit
  def embed(crops):
    x = crops.astype(jnp.float32) / 127.5 - 1.0
    e = module.apply(variables, arcface.identity_crop(x, crop_mode), train=False)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True).clip(1e-12)

  def run(crops: np.ndarray) -> np.ndarray:
    crops = np.asarray(crops, np.uint8)
    out = []
    for i in range(0, len(crops), batch_size):
      chunk = crops[i:i + batch_size]
      pad = batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
      out.append(np.asarray(embed(chunk))[:batch_size - pad])
    return np.concatenate(out) if out else np.zeros((0, module.embedding_dim), np.float32)

  return run


def dlib_embedder(detector: Any = None) -> FaceEmbedder:
  """dlib's 128-d face descriptor (unit norm) of a detected face; see fsjax.faces.recognize."""
  from fsjax.faces import recognize  # pylint: disable=g-import-not-at-top
  recognizer = recognize.DlibRecognizer(detector=detector)
  return recognizer.describe


def identity_face_embedder(identity_dir: str) -> FaceEmbedder:
  """An fsjax identity checkpoint applied to a detected face: aligned at 112 px with the
  checkpoint's own alignment ('ffhq' or 'arcface'), unit-norm float32 [D]."""
  from fsjax.faces import align  # pylint: disable=g-import-not-at-top
  from fsjax.identity import checkpoint as identity  # pylint: disable=g-import-not-at-top
  meta = identity.read_meta(identity_dir)
  alignment = meta.get('alignment', 'arcface')
  encode = identity.load_identity_encoder(identity_dir)
  size = int(meta.get('input_size', 112))

  def run(image: np.ndarray, face: Any) -> np.ndarray:
    crop, _ = align.align_face(image, face, alignment, size)
    return np.asarray(encode(np.asarray(crop, np.uint8)[None]), np.float32)[0]

  return run


def face_embedders(identity_dirs: Mapping[str, str], detector: Any = None
                   ) -> dict[str, FaceEmbedder]:
  """{'dlib': dlib's descriptor, NAME: identity_face_embedder(DIR) for each extra}."""
  if DLIB in identity_dirs:
    raise ValueError(f'recognizer name {DLIB!r} is taken by dlib\'s descriptor')
  found = {DLIB: dlib_embedder(detector)}
  for name, directory in identity_dirs.items():
    found[name] = identity_face_embedder(directory)
  return found
