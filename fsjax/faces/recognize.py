"""dlib's face recognition descriptor, an identity embedding independent of fsjax training.

`DlibRecognizer` wraps `dlib.face_recognition_model_v1` with the
`dlib_face_recognition_resnet_model_v1.dat` model of the face-recognition-models wheel:
a ResNet-29 trained by D. King on about 3 million faces (99.38% on LFW by dlib's
report). dlib aligns the face itself from the landmarks (a 150 x 150 chip, as
`dlib.get_face_chip` with padding 0.25) and returns a 128-d descriptor; we L2-normalise
it so that dot products are cosines, as `fsjax.eval.metrics.id_retrieval` and
`mean_cosine` expect (dlib's own same-person rule, Euclidean distance < 0.6 on the raw
descriptors, does not carry over to the normalised ones).

For ID retrieval this plays the role of the "recognizer other than the training one"
(the FaceShifter paper used CosFace): fsjax's identity encoder is an ArcFace, so this
network shares neither weights nor training data with it.

Landmarks come from `fsjax.faces.detect.DlibDetector` (a `Face` carries its 68 points),
so no second shape predictor is loaded: pass the detector's `Face`, or its landmarks.
"""

import os
from typing import Optional, Sequence, Union

import numpy as np

from fsjax.faces import detect as detect_lib

MODEL_FILE = 'dlib_face_recognition_resnet_model_v1.dat'
DESCRIPTOR_DIM = 128

Landmarks = Union[detect_lib.Face, np.ndarray]


def _rgb(image) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}')
  return np.ascontiguousarray(image)


def _points68(face: Landmarks) -> np.ndarray:
  lm = face.landmarks68 if isinstance(face, detect_lib.Face) else face
  lm = np.asarray(lm, np.float64)
  if lm.shape != (68, 2):
    raise ValueError(f'expected a Face or [68, 2] landmarks, got {lm.shape}')
  return lm


def full_object_detection(face: Landmarks):
  """A dlib.full_object_detection from a `Face` or [68, 2] (x, y) landmarks.

  dlib's aligner reads only the parts (rounded to whole pixels, dlib points are
  integers); the rectangle is the landmarks' bounding box (or the Face's box).
  """
  import dlib  # pylint: disable=g-import-not-at-top
  lm = _points68(face)
  if isinstance(face, detect_lib.Face):
    x0, y0, x1, y1 = face.box
  else:
    (x0, y0), (x1, y1) = lm.min(axis=0), lm.max(axis=0) + 1
  rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1,
                        int(round(y1)) - 1)
  parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in lm])
  return dlib.full_object_detection(rect, parts)


def _normalise(descriptors: np.ndarray) -> np.ndarray:
  d = np.asarray(descriptors, np.float64).reshape(-1, DESCRIPTOR_DIM)
  return (d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class DlibRecognizer:
  """128-d dlib face descriptors, L2-normalised.

  Usage:
    detector = DlibDetector()
    recognizer = DlibRecognizer(detector=detector)
    e = recognizer.describe(image, detector.detect(image)[0])  # float32 [128], unit.

  The model (about 22 MB) loads on first use. Not thread-safe (one dlib network per
  instance); make one per thread or process.
  """

  def __init__(self, model_dir: Optional[str] = None,
               detector: Optional[detect_lib.DlibDetector] = None, num_jitters: int = 0,
               padding: float = 0.25):
    """Configures the recognizer.

    Args:
      model_dir: folder holding MODEL_FILE (default: `detect.dlib_model_dir()`, the
        face-recognition-models wheel, or FSJAX_DLIB_MODELS).
      detector: used only by `describe_image` (images without landmarks); share the
        detector you already have so its models load once. Default: a DlibDetector
        made on first need.
      num_jitters: > 1 averages the descriptor over that many random jitters of the
        chip (dlib's option; slower, slightly more stable). 0: deterministic.
      padding: dlib's chip padding around the face (0.25 is what the model was trained
        with).
    """
    self.model_dir = model_dir
    self.detector = detector
    self.num_jitters = num_jitters
    self.padding = padding
    self._model = None

  def __getstate__(self):
    """Pickles the settings only (the model reloads lazily)."""
    state = dict(self.__dict__)
    state['_model'] = None
    return state

  @property
  def model(self):
    if self._model is None:
      import dlib  # pylint: disable=g-import-not-at-top
      path = os.path.join(self.model_dir or detect_lib.dlib_model_dir(), MODEL_FILE)
      if not os.path.isfile(path):
        raise FileNotFoundError(f'dlib model file missing: {path}')
      self._model = dlib.face_recognition_model_v1(path)
    return self._model

  def describe(self, image: np.ndarray, face: Landmarks) -> np.ndarray:
    """Descriptor of one face.

    Args:
      image: uint8 [H, W, 3] RGB.
      face: a `fsjax.faces.detect.Face` found in `image`, or its landmarks [68, 2]
        (x, y) pixels, iBUG order.

    Returns:
      float32 [128], unit L2 norm.
    """
    d = self.model.compute_face_descriptor(_rgb(image), full_object_detection(face),
                                           self.num_jitters, self.padding)
    return _normalise(np.array(d))[0]

  def describe_faces(self, image: np.ndarray, faces: Sequence[Landmarks]) -> np.ndarray:
    """Descriptors float32 [F, 128] of several faces of one image (one dlib batch)."""
    if not len(faces):
      return np.zeros((0, DESCRIPTOR_DIM), np.float32)
    import dlib  # pylint: disable=g-import-not-at-top
    shapes = dlib.full_object_detections()
    for f in faces:
      shapes.append(full_object_detection(f))
    d = self.model.compute_face_descriptor(_rgb(image), shapes, self.num_jitters,
                                           self.padding)
    return _normalise(np.array([np.array(v) for v in d]))

  def describe_batch(self, images: Sequence[np.ndarray], faces: Sequence[Landmarks]
                     ) -> np.ndarray:
    """Descriptors float32 [N, 128] of one face per image (images[i] with faces[i]).

    Images may differ in size. dlib runs them as one batch of 150 x 150 chips.
    """
    if len(images) != len(faces):
      raise ValueError(f'{len(images)} images but {len(faces)} faces')
    if not len(images):
      return np.zeros((0, DESCRIPTOR_DIM), np.float32)
    import dlib  # pylint: disable=g-import-not-at-top
    batch_shapes = []
    for f in faces:
      shapes = dlib.full_object_detections()
      shapes.append(full_object_detection(f))
      batch_shapes.append(shapes)
    d = self.model.compute_face_descriptor([_rgb(im) for im in images], batch_shapes,
                                           self.num_jitters, self.padding)
    return _normalise(np.array([np.array(v[0]) for v in d]))

  def describe_image(self, image: np.ndarray) -> Optional[np.ndarray]:
    """Descriptor float32 [128] of the largest face the detector finds, or None."""
    if self.detector is None:
      self.detector = detect_lib.DlibDetector()
    faces = self.detector.detect(_rgb(image))
    return self.describe(image, faces[0]) if faces else None
