"""Faces through a video: detection on keyframes, tracking in between, stable identities.

`VideoFaceTracker(detector, fps)(frame)` returns the frame's faces, largest first, each a
`TrackedFace` (a detect.Face with its track and person numbers), landmarks smoothed over time:

- Keyframes: every `detect_every` frames, at once when tracking loses confidence (the fit's
  shape, a jump, a face leaving the frame or no longer looking like itself; see
  `VideoFaceTracker._fit_ok`) and on a scene cut (`SceneCuts`). The detector sees a copy of
  the frame downscaled to `detect_max_side`; the landmarks are then fitted at full resolution.
- Between keyframes each face is followed by fitting dlib's 68-point shape predictor in a box
  placed from its previous landmarks (`box_from_landmarks`), moved by the face's velocity
  (two fits a pixel apart, averaged). On keyframes a detection confirms a followed face (its
  tracked landmarks are kept, so keyframes add no jump); an unconfirmed face ends after
  `max_unconfirmed` keyframes.
- Persons are numbered in order of first appearance, largest first within a frame. With
  `reidentify`, a new track takes the number of a person out of view whose dlib face
  descriptor matches (recognize.DlibRecognizer), so a face that leaves, or a scene cut, does
  not renumber anyone.
- Landmarks are smoothed per track with One-Euro filters in units of the face size
  (`OneEuroFilter`): the centre follows motion closely, the shape about it is smoothed
  strongly; the raw fits drive the tracking, so smoothing adds no tracking lag.

`FaceTracker` is the older per-frame association (box IoU + smoothing) of detections made
elsewhere, kept for `Swapper.swap_frames(tracker=...)`.
"""

import copy
import dataclasses
import time
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from fsjax.faces import detect as detect_lib
from fsjax.faces.detect import box_iou

# Where dlib's HOG box sits relative to the 68 landmarks it yields: centre c + R(roll) (0, dy) s
# and side k s, with c the landmarks' mean, s their RMS distance to it and roll the eye-line
# angle (mean over the 26 HOG faces of the test photos, docs/swap.md "Video"). The predictor
# was trained on such boxes, so a box placed this way fits as well as a fresh detection.
BOX_DY = -0.17
BOX_SIDE = 2.82
# Box shifts (pixels) of the fits averaged per face and frame (`VideoFaceTracker.fits`).
_FIT_OFFSETS = ((0, 0), (1, 1), (1, 0), (0, 1))


class OneEuroFilter:
  """One-Euro low-pass filter (Casiez et al. 2012) over arrays of any fixed shape.

  The cutoff frequency rises with the speed of the signal: strong smoothing when a face is
  still (no jitter), little lag when it moves.
  """

  def __init__(self, min_cutoff: float = 1.0, beta: float = 4.0, d_cutoff: float = 1.0):
    self.min_cutoff = min_cutoff
    self.beta = beta
    self.d_cutoff = d_cutoff
    self._x = None
    self._dx = None

  @staticmethod
  def _alpha(cutoff, dt):
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)

  def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
    """Filters sample x taken dt seconds after the previous one; returns the smoothed value."""
    x = np.asarray(x, np.float64)
    if self._x is None:
      self._x, self._dx = x, np.zeros_like(x)
      return x
    dx = (x - self._x) / dt
    a_d = self._alpha(self.d_cutoff, dt)
    self._dx = self._dx + a_d * (dx - self._dx)
    cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
    a = self._alpha(cutoff, dt)
    self._x = self._x + a * (x - self._x)
    return self._x


def _smooth(centre_filter: OneEuroFilter, shape_filter: OneEuroFilter, lm68: np.ndarray,
            unit: float, dt: float) -> tuple[np.ndarray, np.ndarray]:
  """(landmarks68, landmarks5) float32, filtered as a moving centre plus a shape about it.

  The centre (the mean of 68 fits, so far less noisy than any one point) gets a filter that
  follows motion closely; the shape keeps the strong smoothing. One filter over the raw points
  would trail a moving face by many pixels (docs/swap.md "Video": lag and jitter).
  """
  points = np.concatenate([np.asarray(lm68, np.float64),
                           detect_lib.landmarks5_from_68(lm68).astype(np.float64)], axis=0)
  centre = points[:68].mean(axis=0)
  out = (centre_filter(centre / unit, dt) + shape_filter((points - centre) / unit, dt)) * unit
  return out[:68].astype(np.float32), out[68:].astype(np.float32)


@dataclasses.dataclass
class _IouTrack:
  box: tuple
  scale: float
  last_frame: int
  filter: OneEuroFilter


class FaceTracker:
  """Associates per-frame detections (greedy box IoU) and smooths their landmarks.

  Landmarks are filtered in units of the face size fixed when the track starts, so the filter
  constants do not depend on the resolution. A track not matched for `max_missing` frames ends.
  """

  def __init__(self, fps: float, *, iou_threshold: float = 0.3, max_missing: int = 5,
               min_cutoff: float = 1.0, beta: float = 4.0):
    self.fps = float(fps)
    self.iou_threshold = iou_threshold
    self.max_missing = max_missing
    self.min_cutoff = min_cutoff
    self.beta = beta
    self._tracks: list[_IouTrack] = []
    self._frame = -1

  def update(self, faces: Sequence[Any]) -> list[Any]:
    """Takes the detections of the next frame; returns them (same order) with smoothed landmarks.

    Args:
      faces: objects with `box` (x0, y0, x1, y1), `landmarks68` [68, 2] and `landmarks5` [5, 2]
        (fsjax.faces.detect.Face); dataclasses, copied with the smoothed landmarks.
    """
    self._frame += 1
    self._tracks = [t for t in self._tracks if self._frame - t.last_frame <= self.max_missing]
    pairs = sorted(((box_iou(f.box, t.box), i, j) for i, f in enumerate(faces)
                    for j, t in enumerate(self._tracks)), reverse=True)
    assigned, used = {}, set()
    for iou, i, j in pairs:
      if iou < self.iou_threshold:
        break
      if i not in assigned and j not in used:
        assigned[i] = j
        used.add(j)
    out = []
    for i, face in enumerate(faces):
      points = np.concatenate([np.asarray(face.landmarks68, np.float64),
                               np.asarray(face.landmarks5, np.float64)], axis=0)
      if i in assigned:
        track = self._tracks[assigned[i]]
        dt = (self._frame - track.last_frame) / self.fps
      else:
        x0, y0, x1, y1 = face.box
        track = _IouTrack(box=tuple(face.box), scale=max(float(np.hypot(x1 - x0, y1 - y0)), 1.0),
                          last_frame=self._frame,
                          filter=OneEuroFilter(self.min_cutoff, self.beta))
        self._tracks.append(track)
        dt = 1.0 / self.fps
      smooth = track.filter(points / track.scale, dt) * track.scale
      track.box = tuple(face.box)
      track.last_frame = self._frame
      out.append(dataclasses.replace(face, landmarks68=smooth[:68].astype(np.float32),
                                     landmarks5=smooth[68:].astype(np.float32)))
    return out


# ----------------------------------------------------------------------------- tracking


def landmark_frame(lm68: np.ndarray) -> tuple[np.ndarray, float, float]:
  """(centre [2], RMS radius s, roll in degrees) of [68, 2] landmarks; roll = eye-line angle."""
  lm = np.asarray(lm68, np.float64)
  centre = lm.mean(axis=0)
  scale = float(np.sqrt(((lm - centre) ** 2).sum(axis=1).mean()))
  eyes = lm[detect_lib.LEFT_EYE_68].mean(axis=0) - lm[detect_lib.RIGHT_EYE_68].mean(axis=0)
  return centre, max(scale, 1e-6), float(np.degrees(np.arctan2(eyes[1], eyes[0])))


def box_from_landmarks(lm68: np.ndarray, shift: Sequence[float] = (0.0, 0.0)
                       ) -> tuple[tuple[float, float, float, float], float]:
  """(box, roll): where the detector would put the box of a face with these landmarks.

  Args:
    lm68: [68, 2] landmarks.
    shift: (dx, dy) pixels added to the box centre (the face's predicted motion).

  Returns:
    (x0, y0, x1, y1) axis-aligned, of side BOX_SIDE * s, and the roll in degrees (the box
    is the upright face's: fit it on a patch rotated by the roll, `DlibDetector.fit68`).
  """
  centre, scale, roll = landmark_frame(lm68)
  angle = np.radians(roll)
  offset = BOX_DY * scale * np.array([-np.sin(angle), np.cos(angle)])
  cx, cy = centre + offset + np.asarray(shift, np.float64)
  half = BOX_SIDE * scale / 2
  return (float(cx - half), float(cy - half), float(cx + half), float(cy + half)), roll


def shape_error(lm68: np.ndarray, reference: np.ndarray) -> float:
  """RMS distance of lm68 to `reference` after the best similarity fit, in units of its size."""
  a = np.asarray(lm68, np.float64)
  b = np.asarray(reference, np.float64)
  a = a - a.mean(axis=0)
  b = b - b.mean(axis=0)
  norm_b = np.sqrt((b ** 2).sum())
  if norm_b < 1e-9 or np.sqrt((a ** 2).sum()) < 1e-9:
    return float('inf')
  # Complex least squares: the rotation + scale z minimising |z a - b| (points as x + iy).
  za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
  z = np.vdot(za, zb) / np.vdot(za, za)
  return float(np.sqrt((np.abs(z * za - zb) ** 2).mean()) / (norm_b / np.sqrt(len(b))))


def face_patch(frame: np.ndarray, lm68: np.ndarray, size: int = 24) -> np.ndarray:
  """float32 [size, size] grey patch of the face, upright and scaled by its landmarks.

  It spans 3.2 RMS radii about the landmarks' centre (brows to chin, cheek to cheek). The
  region is area-averaged first, so pixel noise does not alias into the small patch.
  """
  centre, scale, roll = landmark_frame(lm68)
  half = 0.75 * 3.2 * scale  # covers the rotated square
  height, width = frame.shape[:2]
  x0, y0 = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
  x1 = min(width, int(np.ceil(centre[0] + half)))
  y1 = min(height, int(np.ceil(centre[1] + half)))
  if x1 - x0 < 2 or y1 - y0 < 2:
    return np.zeros((size, size), np.float32)
  k = min(1.0, 3 * size / (2 * half))
  region = cv2.resize(frame[y0:y1, x0:x1], None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
  local = ((centre[0] - x0) * k, (centre[1] - y0) * k)
  m = cv2.getRotationMatrix2D(local, float(roll), size / (3.2 * scale * k))
  m[:, 2] += np.array([size / 2, size / 2]) - local
  patch = cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
  return patch.astype(np.float32).mean(axis=-1)


def patch_similarity(a: np.ndarray, b: np.ndarray) -> float:
  """Normalised cross-correlation of two patches, in [-1, 1] (0 for a flat patch)."""
  a = a - a.mean()
  b = b - b.mean()
  norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
  return float((a * b).sum() / norm) if norm > 1e-6 else 0.0


class SceneCuts:
  """Flags scene cuts: mean absolute difference of small grey thumbnails of consecutive frames."""

  def __init__(self, threshold: float = 40.0, cells: int = 32):
    """threshold: mean difference in grey levels (0..255) above which a frame starts a new shot;
    cells: thumbnail columns (rows follow the aspect ratio)."""
    self.threshold = threshold
    self.cells = cells
    self._previous = None

  def __call__(self, frame: np.ndarray) -> bool:
    height, width = frame.shape[:2]
    step = max(1, width // (4 * self.cells))
    # A strided view, then an area average: about as good as resizing the frame, far cheaper.
    sub = np.ascontiguousarray(frame[::step, ::step])
    size = (self.cells, max(1, round(self.cells * height / width)))
    thumb = cv2.resize(sub, size, interpolation=cv2.INTER_AREA).astype(np.float32).mean(axis=-1)
    previous, self._previous = self._previous, thumb
    return previous is not None and float(np.abs(thumb - previous).mean()) > self.threshold


@dataclasses.dataclass(frozen=True, eq=False)
class TrackedFace(detect_lib.Face):
  """A face of a video frame (detect.Face fields, landmarks smoothed) and who it is.

  Attributes:
    track: id of the unbroken run of frames this face was followed through.
    person: person number: order of first appearance (largest first within a frame); with
      re-identification a person keeps it across tracks.
    keyframe: whether the detector confirmed the face in this frame (else tracking alone).
  """
  track: int = -1
  person: int = -1
  keyframe: bool = False


@dataclasses.dataclass
class _Track:
  id: int
  person: int
  raw: np.ndarray  # float64 [68, 2], the last fit (unsmoothed; it places the next box)
  reference: np.ndarray  # the fit at the last confirmation, for the shape check
  patch: Optional[np.ndarray]  # `face_patch` at the last confirmation, for the appearance check
  velocity: np.ndarray  # landmark centre motion, pixels per frame
  scale: float  # box diagonal at birth: the filter's unit
  score: float
  detector: str
  centre_filter: OneEuroFilter  # the landmarks' mean
  shape_filter: OneEuroFilter  # the landmarks about their mean
  last_frame: int
  misses: int = 0  # keyframes in a row without a matching detection
  fit: Optional[np.ndarray] = None  # this frame's fit, before it is accepted
  confirmed: bool = False  # this frame's fit is trusted (passed `_fit_ok`, or detected)
  followed: bool = False  # this frame's fit came from tracking (so its motion is real)
  detected: int = -1  # the last frame where a detection matched
  box: Optional[tuple] = None  # the box of the last tracked fit, and its roll
  roll: float = 0.0


@dataclasses.dataclass
class _Person:
  descriptor: Optional[np.ndarray]
  track: Optional[int]  # the live track showing this person, if any


class VideoFaceTracker:
  """Detects faces on keyframes and follows them in between (see the module docstring).

  Call it on the frames of one video in order. Not thread-safe (one dlib detector).
  """

  def __init__(self, detector: Any, fps: float, *, detect_every: int = 10,
               detect_max_side: int = 640, max_shape_error: float = 0.15,
               max_jump: float = 0.6, max_scale_change: float = 0.25,
               min_similarity: float = 0.5,
               box_hysteresis: float = 0.03, settle_fits: int = 3, fits: int = 2,
               max_unconfirmed: int = 2, min_iou: float = 0.3,
               scene_cut: Optional[float] = 40.0, cnn_fallback_every: Optional[int] = None,
               reidentify: bool = False, recognizer: Any = None, same_person: float = 0.92,
               min_cutoff: float = 1.0, beta: float = 4.0, centre_beta: float = 40.0):
    """Configures the tracker.

    Args:
      detector: fsjax.faces.detect.DlibDetector (its `detect`, `fit68`, `max_roll`).
      fps: frame rate (the smoothing filter's time base).
      detect_every: keyframes are the frames whose index is a multiple of this (1 = every
        frame), plus those where tracking loses confidence or the scene cuts.
      detect_max_side: the detector sees the frame downscaled to this long side (faces of
        about 80 / detect_max_side of the frame's long side and larger are found); 0 = full.
      max_shape_error: a fit whose `shape_error` to the track's last confirmed shape exceeds
        this (units of the face size) loses confidence.
      max_jump: so does a fit whose centre lands further than this (face sizes) from where
        the face's velocity put it...
      max_scale_change: ...or whose size changes by more than this fraction in one frame...
      min_similarity: ...or whose `face_patch` correlates less than this with the one at the
        track's last confirmation (the face has gone or is covered).
      box_hysteresis: a followed face keeps its box while the next one would move by at most
        this fraction of its side (see `_fit`).
      settle_fits: a detection is fitted up to this many times at full resolution, until
        its box stays within the hysteresis.
      fits: landmark fits averaged per face and frame, in boxes a pixel apart (1 to 4).
      max_unconfirmed: a followed face ends when more than this many keyframes in a row do
        not detect it.
      min_iou: least box IoU between a detection and a track to match them.
      scene_cut: `SceneCuts` threshold (None: no cut detection); a cut ends every track.
      cnn_fallback_every: the detector's CNN search of a keyframe where HOG finds no face
        (slow) runs at most once per this many frames (default: once a second; 0 = never).
      reidentify: give a new track the number of a matching person out of view.
      recognizer: fsjax.faces.recognize.DlibRecognizer (default: made when needed).
      same_person: least cosine of the normalised dlib descriptors for the same person
        (same-person pairs of the test photos >= 0.936, different <= 0.894).
      min_cutoff, beta: `OneEuroFilter` constants of the landmarks about their centre, in
        units of the face size (FaceTracker's); centre_beta: the centre's speed coefficient.
    """
    self.detector = detector
    self.fps = float(fps)
    self.detect_every = max(1, int(detect_every))
    self.detect_max_side = int(detect_max_side)
    self.max_shape_error = max_shape_error
    self.max_jump = max_jump
    self.max_scale_change = max_scale_change
    self.min_similarity = min_similarity
    self.box_hysteresis = box_hysteresis
    self.settle_fits = max(1, int(settle_fits))
    self.fits = min(max(1, int(fits)), len(_FIT_OFFSETS))
    self.max_unconfirmed = max_unconfirmed
    self.min_iou = min_iou
    self.cuts = SceneCuts(scene_cut) if scene_cut else None
    self.cnn_fallback_every = (max(1, int(round(self.fps))) if cnn_fallback_every is None
                               else int(cnn_fallback_every))
    self.reidentify = reidentify
    self._recognizer = recognizer
    self.same_person = same_person
    self.min_cutoff = min_cutoff
    self.beta = beta
    self.centre_beta = centre_beta
    self.frame = -1
    self.tracks: list[_Track] = []
    self.persons: list[_Person] = []
    self._next_track = 0
    self._last_fallback = None
    self._prepare_detector = None
    self.prepare_seconds = 0.0  # `prepare`'s time (another thread), part of detection
    # Seconds spent and events, for the video benchmark.
    self.seconds = {'detect': 0.0, 'track': 0.0}
    self.counts = {'keyframes': 0, 'lost': 0, 'scene_cuts': 0, 'tracks': 0, 'cnn_fallbacks': 0}

  @property
  def recognizer(self):
    if self._recognizer is None:
      from fsjax.faces import recognize  # pylint: disable=g-import-not-at-top
      self._recognizer = recognize.DlibRecognizer(model_dir=self.detector.model_dir)
    return self._recognizer

  def _fit(self, frame: np.ndarray, lm68: np.ndarray, shift=(0.0, 0.0),
           track: Optional[_Track] = None) -> np.ndarray:
    """Fits the landmarks in the box that `lm68` (moved by `shift`) places.

    A track keeps its previous box while the new one is within `box_hysteresis` of it: the
    fit then sees the same box, as it does the detector's on a still face, and the noise of
    one fit does not move the next box (jitter).
    """
    box, roll = box_from_landmarks(lm68, shift)
    if track is not None:
      if track.box is not None:
        side = track.box[2] - track.box[0]
        moved = max(abs(a - b) for a, b in zip(box, track.box))
        if moved <= self.box_hysteresis * side and abs(roll - track.roll) <= 2.0:
          box, roll = track.box, track.roll
      track.box, track.roll = box, roll
    roll = 0.0 if abs(roll) <= self.detector.max_roll else roll
    # dlib's points are whole pixels: the mean of fits in boxes one pixel apart is sub-pixel
    # and less noisy (docs/swap.md "Video": jitter).
    fits = [self.detector.fit68(frame, (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), roll)
            for dx, dy in _FIT_OFFSETS[:self.fits]]
    return np.mean(np.asarray(fits, np.float64), axis=0)

  def _fit_ok(self, track: _Track, fit: np.ndarray, frame: np.ndarray) -> bool:
    """Whether a tracked fit is trusted: plausible shape, no jump, in the frame, same face.

    The predictor always returns a face-like shape, also where the face has gone, so the
    last test compares what the fit frames with the face at its last confirmation.
    """
    if not np.isfinite(fit).all():
      return False
    height, width = frame.shape[:2]
    centre, scale, _ = landmark_frame(fit)
    before, before_scale, _ = landmark_frame(track.raw)
    expected = before + track.velocity
    return bool(shape_error(fit, track.reference) <= self.max_shape_error
                and np.hypot(*(centre - expected)) <= self.max_jump * before_scale
                and abs(scale / before_scale - 1.0) <= self.max_scale_change
                and 0 <= centre[0] < width and 0 <= centre[1] < height
                and patch_similarity(face_patch(frame, fit), track.patch) >= self.min_similarity)

  def _small(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
    """(the frame downscaled to detect_max_side, its scale)."""
    long_side = max(frame.shape[:2])
    scale = min(1.0, self.detect_max_side / long_side) if self.detect_max_side else 1.0
    if scale == 1.0:
      return frame, scale
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale

  def prepare(self, frame: np.ndarray, index: int) -> Optional[tuple]:
    """The detector's HOG pass for frame `index` if it is a scheduled keyframe, else None.

    Pass the result to `__call__` with the same frame. Safe to run in another thread, ahead
    of `__call__` (it has its own dlib detector), so that keyframes do not stall tracking.
    """
    if index % self.detect_every:
      return None
    start = time.perf_counter()
    if self._prepare_detector is None:
      self._prepare_detector = copy.copy(self.detector)  # settings only; models reload
    small, scale = self._small(frame)
    boxes = self._prepare_detector.hog_boxes(small)
    self.prepare_seconds += time.perf_counter() - start
    return small, scale, boxes

  def _detect(self, frame: np.ndarray, prepared: Optional[tuple] = None
              ) -> list[tuple[detect_lib.Face, tuple, float]]:
    """(face, box, roll) of each detection, the landmarks fitted at full resolution in `box`."""
    small, scale, hog = prepared if prepared is not None else self._small(frame) + (None,)
    trusted = [tuple(v * scale for v in box_from_landmarks(t.fit)[0])
               for t in self.tracks if t.confirmed]
    fallback = bool(self.cnn_fallback_every) and (
        self._last_fallback is None
        or self.frame - self._last_fallback >= self.cnn_fallback_every)
    found = self.detector.detect(small, cnn_fallback=fallback, trusted=trusted, hog=hog)
    if fallback and not found and self.detector.use_cnn:
      self._last_fallback = self.frame
      self.counts['cnn_fallbacks'] += 1
    faces = []
    for face in found:
      lm = np.asarray(face.landmarks68, np.float64) / scale
      # Fit again until the box the landmarks place stays put: tracking then starts from its
      # steady state instead of settling over the first frames (jitter).
      settle = _Track(id=-1, person=-1, raw=lm, reference=lm, patch=None,
                      velocity=np.zeros(2), scale=1.0,
                      score=0.0, detector='', centre_filter=None, shape_filter=None,
                      last_frame=self.frame)
      for _ in range(self.settle_fits):
        previous = settle.box
        lm = self._fit(frame, lm, track=settle)
        if settle.box is previous:
          break
      box = tuple(float(v) / scale for v in face.box)
      faces.append((dataclasses.replace(face, box=box, landmarks68=lm.astype(np.float32),
                                        landmarks5=detect_lib.landmarks5_from_68(lm)),
                    settle.box, settle.roll))
    return faces

  def _new_person(self, frame: np.ndarray, face: detect_lib.Face, track_id: int) -> int:
    descriptor = None
    if self.reidentify:
      descriptor = self.recognizer.describe(frame, face.landmarks68)
      best, best_cos = None, self.same_person
      for number, person in enumerate(self.persons):
        if person.track is None and person.descriptor is not None:
          cos = float(np.dot(person.descriptor, descriptor))
          if cos >= best_cos:
            best, best_cos = number, cos
      if best is not None:
        self.persons[best].track = track_id
        return best
    self.persons.append(_Person(descriptor=descriptor, track=track_id))
    return len(self.persons) - 1

  def _end(self, track: _Track) -> None:
    if 0 <= track.person < len(self.persons) and self.persons[track.person].track == track.id:
      self.persons[track.person].track = None

  def __call__(self, frame: np.ndarray, prepared: Optional[tuple] = None
               ) -> list[TrackedFace]:
    """The faces of the next frame (uint8 [H, W, 3] RGB), largest box first.

    prepared: `prepare(frame, index)` of this frame, when it was run ahead.
    """
    self.frame += 1
    start = time.perf_counter()
    cut = self.cuts(frame) if self.cuts is not None else False
    if cut:
      self.counts['scene_cuts'] += 1
      for track in self.tracks:
        self._end(track)
      self.tracks = []
    # Scheduled keyframes are fixed frames (so `prepare` can run ahead); more come on demand.
    keyframe = cut or self.frame % self.detect_every == 0
    for track in self.tracks:
      track.fit = self._fit(frame, track.raw, track.velocity, track)
      track.confirmed = track.followed = self._fit_ok(track, track.fit, frame)
      if not track.confirmed:
        self.counts['lost'] += 1
        keyframe = True
    tracked = time.perf_counter()
    self.seconds['track'] += tracked - start
    if keyframe:
      scheduled = prepared is not None and self.frame % self.detect_every == 0
      self._keyframe(frame, prepared if scheduled else None)
      self.seconds['detect'] += time.perf_counter() - tracked
    end = time.perf_counter()
    out = []
    for track in self.tracks:
      steps = self.frame - track.last_frame
      if track.followed and steps > 0:  # its motion predicts the next box
        track.velocity = (landmark_frame(track.fit)[0] - landmark_frame(track.raw)[0]) / steps
      else:  # new, or found again by the detector
        track.velocity = np.zeros(2)
      track.raw, track.fit = track.fit, None
      lm68, lm5 = _smooth(track.centre_filter, track.shape_filter, track.raw, track.scale,
                          max(1, steps) / self.fps)
      track.last_frame = self.frame
      out.append(TrackedFace(box=box_from_landmarks(track.raw)[0], landmarks68=lm68,
                             landmarks5=lm5, score=track.score, detector=track.detector,
                             track=track.id, person=track.person,
                             keyframe=track.detected == self.frame))
    self.seconds['track'] += time.perf_counter() - end
    out.sort(key=lambda f: -f.area)
    return out

  def _keyframe(self, frame: np.ndarray, prepared: Optional[tuple]) -> None:
    """Detects, matches detections to tracks (box IoU), starts and ends tracks."""
    self.counts['keyframes'] += 1
    found = self._detect(frame, prepared)
    detections = [face for face, _, _ in found]
    boxes = [box_from_landmarks(t.fit)[0] if t.confirmed else
             box_from_landmarks(t.raw, t.velocity)[0] for t in self.tracks]
    pairs = sorted(((box_iou(d.box, b), i, j) for i, d in enumerate(detections)
                    for j, b in enumerate(boxes)), key=lambda p: -p[0])
    matched, used = {}, set()
    for iou, i, j in pairs:
      if iou < self.min_iou:
        break
      if i not in matched and j not in used:
        matched[i] = j
        used.add(j)
    kept = []
    for j, track in enumerate(self.tracks):
      if j in used:
        i = next(i for i, k in matched.items() if k == j)
        detection = detections[i]
        if not track.confirmed:  # tracking had lost it: take the detector's fit
          track.fit = np.asarray(detection.landmarks68, np.float64)
          track.followed = False
          _, track.box, track.roll = found[i]
        track.reference, track.patch = track.fit, face_patch(frame, track.fit)
        track.misses, track.score, track.detector = 0, detection.score, detection.detector
        track.confirmed, track.detected = True, self.frame
        kept.append(track)
      elif track.confirmed and track.misses < self.max_unconfirmed:
        track.misses += 1
        kept.append(track)
      else:
        self._end(track)
    self.tracks = kept
    new = sorted((found[i] for i in range(len(found)) if i not in matched),
                 key=lambda f: -f[0].area)
    for face, box, roll in new:
      lm = np.asarray(face.landmarks68, np.float64)
      track_id = self._next_track
      self._next_track += 1
      self.counts['tracks'] += 1
      # The filter's unit is the box diagonal, as FaceTracker's (same smoothing).
      scale = float(np.sqrt(2.0) * BOX_SIDE * landmark_frame(lm)[1])
      self.tracks.append(_Track(
          id=track_id, person=self._new_person(frame, face, track_id), raw=lm, reference=lm,
          patch=face_patch(frame, lm),
          velocity=np.zeros(2), scale=scale, score=face.score, detector=face.detector,
          centre_filter=OneEuroFilter(self.min_cutoff, self.centre_beta),
          shape_filter=OneEuroFilter(self.min_cutoff, self.beta), last_frame=self.frame, fit=lm,
          confirmed=True, detected=self.frame, box=box, roll=roll))
