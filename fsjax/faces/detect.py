"""Face detection with 68-point landmarks behind a small backend interface.

`FaceDetector` is the interface (`detect(image) -> list[Face]`, largest face first);
`DlibDetector` is the backend shipped with fsjax (dlib from the `dlib-bin` wheel, model
files from the `face-recognition-models` wheel):

1. HOG frontal detector on a working copy whose long side is at most `hog_max_side`
   (default 1024 px; INTER_AREA downscale), upsampled once (twice when the working copy's
   long side is under `small_side`, 400 px), so faces down to about 40 px of the working
   copy are found.
2. HOG detections scoring at least `hog_confident` (0.5) are kept; weaker ones (scores in
   [hog_threshold, hog_confident) = [0, 0.5)) are verified by the MMOD CNN detector on a
   crop around the box (about 0.5 s each on one CPU core). On the test photos this is
   what separates a real, shadowed face (HOG score 0.30, CNN confidence 1.1) from the
   mission patch on `skimage.data.astronaut()` (HOG score 0.12, no CNN detection): no
   single HOG threshold has a comfortable margin between the two.
3. When HOG finds nothing, the MMOD CNN detector runs on the whole image scaled to a long
   side of at most `cnn_max_side` (512 px) without upsampling (slow: about 2 s per
   512x512 image on one core), which catches turned, rolled and partly hidden faces. For
   its boxes the roll is found first (HOG on rotated patches, every 30 degrees up to 90)
   so the landmark predictor sees an upright face.
4. The 68-point shape predictor runs on the full-resolution image (again on an upright
   patch when the face is rolled by more than 10 degrees, see `DlibDetector.landmarks68`);
   the 5 ArcFace points are derived from it (see `landmarks5_from_68`).

Models are loaded lazily, once per detector instance.
"""

import dataclasses
import importlib.util
import os
from typing import Optional, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from fsjax.faces import align as align_lib

# Indices into the iBUG 68-point scheme (0-based).
RIGHT_EYE_68 = slice(36, 42)  # The subject's right eye = image left.
LEFT_EYE_68 = slice(42, 48)  # The subject's left eye = image right.
NOSE_TIP_68 = 30
MOUTH_LEFT_68 = 48  # Image-left mouth corner.
MOUTH_RIGHT_68 = 54  # Image-right mouth corner.

MODEL_FILES = {
    'shape68': 'shape_predictor_68_face_landmarks.dat',
    'cnn': 'mmod_human_face_detector.dat',
}


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
  """One detected face, in the pixel coordinates of the image it was found in.

  Attributes:
    box: (x0, y0, x1, y1) floats, x1/y1 exclusive.
    landmarks68: float32 [68, 2] (x, y), iBUG 68-point order.
    landmarks5: float32 [5, 2] (x, y) in ArcFace/InsightFace order: image-left eye
      centre, image-right eye centre, nose tip, image-left mouth corner, image-right
      mouth corner.
    score: detector confidence (HOG score or CNN confidence; higher is surer).
    detector: which detector produced the box ('hog', 'hog+cnn' = verified, 'cnn').
  """
  box: tuple[float, float, float, float]
  landmarks68: np.ndarray
  landmarks5: np.ndarray
  score: float
  detector: str = ''

  @property
  def area(self) -> float:
    x0, y0, x1, y1 = self.box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@runtime_checkable
class FaceDetector(Protocol):
  """What fsjax needs from a face detector backend."""

  def detect(self, image: np.ndarray) -> list[Face]:
    """Finds faces in uint8 [H, W, 3] RGB; returns them largest (box area) first."""
    ...


def landmarks5_from_68(lm68: np.ndarray) -> np.ndarray:
  """[68, 2] iBUG landmarks -> float32 [5, 2] ArcFace points.

  Eye centres are the means of points 36-41 and 42-47, the nose tip is point 30 and the
  mouth corners are points 48 and 54.
  """
  lm68 = np.asarray(lm68, np.float64)
  if lm68.shape != (68, 2):
    raise ValueError(f'expected [68, 2] landmarks, got {lm68.shape}')
  return np.stack([
      lm68[RIGHT_EYE_68].mean(axis=0),
      lm68[LEFT_EYE_68].mean(axis=0),
      lm68[NOSE_TIP_68],
      lm68[MOUTH_LEFT_68],
      lm68[MOUTH_RIGHT_68],
  ]).astype(np.float32)


def dlib_model_dir() -> str:
  """Folder holding the dlib model files of the face-recognition-models wheel.

  Found with importlib.util.find_spec, which does not import the package (its
  __init__ imports pkg_resources, missing from new environments). The environment
  variable FSJAX_DLIB_MODELS, when set, names another folder with the same files.
  """
  override = os.environ.get('FSJAX_DLIB_MODELS')
  if override:
    return override
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        'dlib face models not found: pip install face-recognition-models '
        '(or set FSJAX_DLIB_MODELS to a folder with ' + ', '.join(MODEL_FILES.values()) + ')')
  return os.path.join(list(spec.submodule_search_locations)[0], 'models')


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
  if scale == 1.0:
    return image
  height, width = image.shape[:2]
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
  return cv2.resize(image, size, interpolation=interpolation)


class DlibDetector:
  """dlib HOG detector (CNN-verified when unsure, CNN fallback) + 68-point predictor.

  Usage: `faces = DlibDetector().detect(image)`. Not thread-safe (dlib objects are
  shared by the calls of one instance); make one instance per thread or process.
  """

  def __init__(self, model_dir: Optional[str] = None, *, hog_max_side: int = 1024,
               small_side: int = 400, hog_threshold: float = 0.0,
               hog_confident: float = 0.5, use_cnn: bool = True, cnn_max_side: int = 512,
               cnn_threshold: float = 0.3, verify_face_px: int = 120,
               max_roll: float = 10.0, roll_iterations: int = 3,
               roll_search: Sequence[float] = (0, -30, 30, -60, 60, -90, 90)):
    """Configures the detector (models load on the first `detect`).

    Args:
      model_dir: folder with the dlib .dat files (default: `dlib_model_dir()`).
      hog_max_side: the HOG detector sees the image downscaled to this long side.
      small_side: working copies with a shorter long side are upsampled twice, not once.
      hog_threshold: HOG detections scoring below this are dropped (dlib's default 0).
      hog_confident: HOG detections scoring below this are verified with the CNN.
      use_cnn: False disables verification and fallback (HOG only, faster; then every
        HOG detection above `hog_threshold` is kept).
      cnn_max_side: the CNN fallback sees the image downscaled to this long side.
      cnn_threshold: minimum CNN confidence.
      verify_face_px: the crop around an unsure HOG box is scaled so the box is this wide.
      max_roll: landmarks of faces tilted by more than this (degrees) are predicted again
        on an upright patch (see `landmarks68`).
      roll_iterations: at most this many upright re-predictions (0 disables them).
      roll_search: rotations (degrees) tried to find the upright pose of CNN-found faces
        for the landmark predictor (see `_upright`); () disables the search.
    """
    self.model_dir = model_dir
    self.hog_max_side = hog_max_side
    self.small_side = small_side
    self.hog_threshold = hog_threshold
    self.hog_confident = hog_confident
    self.use_cnn = use_cnn
    self.cnn_max_side = cnn_max_side
    self.cnn_threshold = cnn_threshold
    self.verify_face_px = verify_face_px
    self.max_roll = max_roll
    self.roll_iterations = roll_iterations
    self.roll_search = tuple(roll_search)
    self._hog = None
    self._cnn = None
    self._shape68 = None

  def __getstate__(self):
    """Pickles the settings only (models reload lazily), e.g. for worker processes."""
    state = dict(self.__dict__)
    state.update(_hog=None, _cnn=None, _shape68=None)
    return state

  # Lazily loaded models.
  def _model_path(self, key: str) -> str:
    path = os.path.join(self.model_dir or dlib_model_dir(), MODEL_FILES[key])
    if not os.path.isfile(path):
      raise FileNotFoundError(f'dlib model file missing: {path}')
    return path

  @property
  def hog(self):
    if self._hog is None:
      import dlib  # pylint: disable=g-import-not-at-top
      self._hog = dlib.get_frontal_face_detector()
    return self._hog

  @property
  def cnn(self):
    if self._cnn is None:
      import dlib  # pylint: disable=g-import-not-at-top
      self._cnn = dlib.cnn_face_detection_model_v1(self._model_path('cnn'))
    return self._cnn

  @property
  def shape68(self):
    if self._shape68 is None:
      import dlib  # pylint: disable=g-import-not-at-top
      self._shape68 = dlib.shape_predictor(self._model_path('shape68'))
    return self._shape68

  # Detection stages; boxes are float (x0, y0, x1, y1) in full-image pixels.
  def _hog_boxes(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float]]:
    scale = min(1.0, self.hog_max_side / max(image.shape[:2]))
    work = np.ascontiguousarray(_resize(image, scale))
    upsample = 2 if max(work.shape[:2]) < self.small_side else 1
    rects, scores, _ = self.hog.run(work, upsample, self.hog_threshold)
    return [((r.left() / scale, r.top() / scale, (r.right() + 1) / scale,
              (r.bottom() + 1) / scale), float(s)) for r, s in zip(rects, scores)]

  def _cnn_boxes(self, image: np.ndarray, upsample: int = 0
                 ) -> list[tuple[tuple[float, ...], float]]:
    """CNN detections on `image` (already at the working scale)."""
    found = self.cnn(np.ascontiguousarray(image), upsample)
    return [((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1),
             float(d.confidence)) for d in found if d.confidence >= self.cnn_threshold]

  def _verify(self, image: np.ndarray, box: Sequence[float]) -> Optional[float]:
    """CNN confidence of a face overlapping `box` in a crop around it, or None."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    height, width = image.shape[:2]
    cx0, cy0 = max(0, int(x0 - 0.5 * w)), max(0, int(y0 - 0.5 * h))
    cx1, cy1 = min(width, int(np.ceil(x1 + 0.5 * w))), min(height, int(np.ceil(y1 + 0.5 * h)))
    scale = self.verify_face_px / max(w, 1.0)
    crop = _resize(image[cy0:cy1, cx0:cx1], scale)
    best = None
    for (bx0, by0, bx1, by1), confidence in self._cnn_boxes(crop):
      found = (bx0 / scale + cx0, by0 / scale + cy0, bx1 / scale + cx0, by1 / scale + cy0)
      if box_iou(found, box) >= 0.3 and (best is None or confidence > best):
        best = confidence
    return best

  def _predict68(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    import dlib  # pylint: disable=g-import-not-at-top
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    shape = self.shape68(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)

  def fit68(self, image: np.ndarray, box: Sequence[float], roll: float = 0.0) -> np.ndarray:
    """One prediction of the 68 landmarks of the face in `box`, without `landmarks68`'s search.

    With roll != 0 the prediction is made on a patch rotated by `roll` degrees about the
    box centre (as in `landmarks68`).

    Returns:
      float32 [68, 2] (x, y) in image pixels.
    """
    if not roll:
      return self._predict68(image, box).astype(np.float32)
    x0, y0, x1, y1 = box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    side = int(np.ceil(2 * max(x1 - x0, y1 - y0)))
    patch, m = self._rotated_patch(image, centre, roll, 1.0, side)
    half_w, half_h = (x1 - x0) / 2, (y1 - y0) / 2
    lm = self._predict68(patch, (side / 2 - half_w, side / 2 - half_h, side / 2 + half_w,
                                 side / 2 + half_h))
    return align_lib.transform_points(align_lib.invert_affine(m), lm).astype(np.float32)

  def _rotated_patch(self, image: np.ndarray, centre: Sequence[float], angle: float,
                     scale: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(patch [side, side, 3], m source -> patch): rotated by angle degrees about centre."""
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), scale)
    m[:, 2] += side / 2 - np.asarray(centre, np.float64)
    return align_lib.warp_affine(image, m, side, border='reflect'), m

  def landmarks68(self, image: np.ndarray, box: Sequence[float], roll: float = 0.0
                  ) -> np.ndarray:
    """68 landmarks of the face in `box` (x0, y0, x1, y1) of uint8 [H, W, 3] RGB.

    The dlib predictor was trained on upright faces. With roll != 0 the prediction is
    made on a patch rotated by `roll` degrees (counter-clockwise, cv2 convention) about
    the box centre. Then, while the eye line is tilted by more than `max_roll` degrees,
    the prediction is repeated on a patch rotated upright (at most `roll_iterations`
    times). Points are mapped back to the image.

    Returns:
      float32 [68, 2] (x, y) in image pixels.
    """
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    width, height = x1 - x0, y1 - y0
    side = int(np.ceil(2 * max(width, height)))
    patch_box = (side / 2 - width / 2, side / 2 - height / 2,
                 side / 2 + width / 2, side / 2 + height / 2)

    def predict_rotated(angle):
      patch, m = self._rotated_patch(image, centre, angle, 1.0, side)
      return align_lib.transform_points(align_lib.invert_affine(m),
                                        self._predict68(patch, patch_box)).astype(np.float64)

    lm = predict_rotated(roll) if roll else self._predict68(image, box)
    for _ in range(self.roll_iterations):
      eyes = lm[LEFT_EYE_68].mean(axis=0) - lm[RIGHT_EYE_68].mean(axis=0)
      tilt = np.degrees(np.arctan2(eyes[1], eyes[0]))
      if abs(tilt) <= self.max_roll:
        break
      lm = predict_rotated(tilt)
    return lm.astype(np.float32)

  def _upright(self, image: np.ndarray, box: Sequence[float]
               ) -> tuple[Sequence[float], float]:
    """(box, roll) for a face the HOG detector missed (rolled faces, mostly).

    Rotates a patch around the box by each angle of `roll_search` (scaled so the box is
    `verify_face_px` wide) and keeps the angle where the HOG detector scores a face
    there best; returns that HOG box mapped back to the image (axis-aligned, centred on
    the face, same size) and the angle, or (box, 0.0) when HOG finds it at no angle.
    """
    x0, y0, x1, y1 = box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    scale = self.verify_face_px / max(x1 - x0, 1.0)
    side = int(np.ceil(2.5 * self.verify_face_px))
    best = None
    for angle in self.roll_search:
      patch, m = self._rotated_patch(image, centre, angle, scale, side)
      rects, scores, _ = self.hog.run(np.ascontiguousarray(patch), 0, -0.5)
      for r, score in zip(rects, scores):
        rc = ((r.left() + r.right() + 1) / 2, (r.top() + r.bottom() + 1) / 2)
        if abs(rc[0] - side / 2) > 0.3 * self.verify_face_px or abs(
            rc[1] - side / 2) > 0.3 * self.verify_face_px:
          continue
        if best is None or score > best[0]:
          best = (score, angle, m, rc, (r.width() / scale, r.height() / scale))
    if best is None:
      return box, 0.0
    _, angle, m, rc, (width, height) = best
    cx, cy = align_lib.transform_points(align_lib.invert_affine(m), rc)
    return (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2), float(angle)

  def hog_boxes(self, image: np.ndarray) -> list[tuple[tuple[float, ...], float]]:
    """(box, score) of the HOG stage of `detect` alone (uint8 [H, W, 3] RGB)."""
    return self._hog_boxes(np.ascontiguousarray(image))

  def detect(self, image: np.ndarray, *, cnn_fallback: bool = True,
             trusted: Sequence[Sequence[float]] = (),
             hog: Optional[Sequence[tuple]] = None) -> list[Face]:
    """Finds faces.

    Args:
      image: uint8 [H, W, 3] RGB.
      cnn_fallback: False skips the CNN search of an image where HOG finds nothing (by far
        the slowest step; the video tracker runs it sparingly).
      trusted: boxes already known to hold a face (a video tracker's faces); weak HOG boxes
        overlapping one (IoU >= 0.3) are kept without the CNN check.
      hog: the `hog_boxes` of this image when already found (e.g. ahead, in another thread
        with another detector instance).

    Returns:
      Faces, largest box first, in `image` pixel coordinates.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}')
    image = np.ascontiguousarray(image)
    found = []
    for box, score in (self._hog_boxes(image) if hog is None else hog):
      if (score >= self.hog_confident or not self.use_cnn
          or any(box_iou(box, known) >= 0.3 for known in trusted)):
        found.append((box, score, 'hog'))
      else:
        confidence = self._verify(image, box)
        if confidence is not None:
          found.append((box, score, 'hog+cnn'))
    if not found and self.use_cnn and cnn_fallback:
      scale = min(1.0, self.cnn_max_side / max(image.shape[:2]))
      for box, confidence in self._cnn_boxes(_resize(image, scale)):
        found.append((tuple(v / scale for v in box), confidence, 'cnn'))
    faces = []
    for box, score, source in found:
      if source == 'cnn' and self.roll_search:
        landmark_box, roll = self._upright(image, box)
        lm68 = self.landmarks68(image, landmark_box, roll)
      else:
        lm68 = self.landmarks68(image, box)
      faces.append(Face(box=tuple(float(v) for v in box), landmarks68=lm68,
                        landmarks5=landmarks5_from_68(lm68), score=score, detector=source))
    faces.sort(key=lambda f: -f.area)
    return faces


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """Intersection over union of two (x0, y0, x1, y1) boxes."""
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0
