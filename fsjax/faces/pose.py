"""Head pose and an expression descriptor from dlib's 68 landmarks (evaluation stand-ins).

The FaceShifter paper measures pose with Hopenet Euler angles and later papers measure
expression with 3DMM expression coefficients (Deep3DFaceRecon); neither network ships
with fsjax. These are our landmark-only stand-ins; they rank swaps the same way in
spirit (smaller = the swap kept the target's pose / expression better) but their numbers
are NOT comparable with the published ones in ../shared/design/faceshifter.md.

Head pose (`head_pose`) is a perspective-n-point fit (cv2.solvePnP) of a generic rigid
3-D face to six landmarks:

  3-D model (`MODEL_POINTS_3D`, arbitrary units, about 0.2 mm each): the six-point
  generic head popularised by S. Mallick, "Head Pose Estimation using OpenCV and Dlib"
  (LearnOpenCV, 2016), with its y and z axes negated so that it is expressed in OpenCV's
  camera axes (x to image right, y down, z away from the camera) and a frontal face has
  the identity rotation. Origin at the nose tip.

    landmark (iBUG index)                        x      y      z
    nose tip (30)                                0      0      0
    chin (8)                                     0    330     65
    image-left eye outer corner (36)          -225   -170    135
    image-right eye outer corner (45)          225   -170    135
    image-left mouth corner (48)              -150    150    125
    image-right mouth corner (54)              150    150    125

  Camera (`camera_matrix`): pinhole, focal length f = image width in pixels (about a
  53 degree horizontal field of view), principal point at the image centre
  ((W - 1) / 2, (H - 1) / 2) in pixel-index coordinates (pixel centres at integers, as
  dlib reports landmarks), square pixels, no lens distortion.

  Fit (`solve_pose`): Levenberg-Marquardt (cv2.SOLVEPNP_ITERATIVE) started from a
  frontal pose, and SQPnP refined by LM; of the solutions that face the camera, the one
  with the smaller RMS reprojection error wins. All six points are used, unweighted.

  Angles (`euler_from_rotation`): R = Rz(roll) @ Ry(yaw) @ Rx(pitch), R mapping model to
  camera coordinates, each a right-handed rotation about the camera axis, in degrees, in
  (-180, 180] (yaw in [-90, 90]). In the image that means:
    yaw > 0: the nose turns toward image left (the subject turns to their right);
    pitch > 0: the nose turns down (the subject looks down);
    roll > 0: the face turns clockwise as displayed (y down), i.e. the eye line's
      angle atan2(dy, dx) from image-left eye to image-right eye, as
      `fsjax.faces.detect` measures tilt.
  Frontal = (0, 0, 0). With a generic head and a guessed focal length the absolute
  angles carry a per-face bias (pitch most: it depends on how far this person's nose
  sits in front of their eyes; near-frontal photos read pitch 2-25 degrees). The bias
  belongs to the face shape, so it partly cancels in `fsjax.eval.metrics.pose_error`
  between a swap and its target; the residual 2-D fit error (RMS reprojection) is what
  `solve_pose` returns.

Expression (`expression_descriptor`): the 51 inner landmarks 17-67 (brows 17-26, nose
27-35, eyes 36-47, mouth 48-67; the jaw line 0-16 is left out because it moves with
yaw more than with expression) mapped by the least-squares similarity (Procrustes:
rotation, uniform scale, translation; no reflection) onto the same points of a fixed
reference face (`REFERENCE_68`), minus those reference points, flattened to float64
[102] (x0, y0, x1, y1, ...). Units: the reference's eye-centre distance (= 1). The
similarity removes position, size and in-plane rotation (roll) only; yaw and pitch
foreshorten the 2-D shape and still leak into the descriptor (which is why the FF++
figures compare swap and target, which share their pose when the swap is good).

`REFERENCE_68` is a mean shape we made, not a published one: `mean_shape` (generalised
Procrustes, made left-right symmetric by adding every shape's mirror image) of the
`fsjax.faces.detect.DlibDetector` 68-point landmarks of `skimage.data.astronaut()` and of
the 9 single-face photos of ../shared/data/faces (ageitgey/face_recognition examples,
MIT) that are near-frontal (|yaw| < 15 degrees by `head_pose`) and not cut by the image
border, in the frame of `canonical_frame` (eye centres at (-0.5, 0) and (0.5, 0), y
down), rounded to 4 decimals; `REFERENCE_SOURCES` lists the images. Any fixed,
plausible face would do: the reference only fixes the frame and units of the descriptor.
"""

from typing import Optional, Sequence

import cv2
import numpy as np

from fsjax.faces import align as align_lib

# Landmarks (iBUG 68, 0-based) that the six 3-D model points stand for, in model order.
MODEL_LANDMARKS = (30, 8, 36, 45, 48, 54)
MODEL_POINTS_3D = np.array([
    [0.0, 0.0, 0.0],  # Nose tip.
    [0.0, 330.0, 65.0],  # Chin.
    [-225.0, -170.0, 135.0],  # Image-left eye, outer corner.
    [225.0, -170.0, 135.0],  # Image-right eye, outer corner.
    [-150.0, 150.0, 125.0],  # Image-left mouth corner.
    [150.0, 150.0, 125.0],  # Image-right mouth corner.
], np.float64)

INNER_68 = slice(17, 68)  # Brows, nose, eyes, mouth: the expression points.
RIGHT_EYE_68 = slice(36, 42)  # Image-left eye.
LEFT_EYE_68 = slice(42, 48)  # Image-right eye.

# MIRROR_68[i] is the landmark that point i becomes in a horizontally mirrored face.
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # Jaw 0..16.
    + list(range(26, 16, -1))  # Brows 17..21 <-> 26..22.
    + [27, 28, 29, 30]  # Nose bridge.
    + [35, 34, 33, 32, 31]  # Nose bottom.
    + [45, 44, 43, 42, 47, 46]  # Eye 36..41 <-> 45..42, 47, 46.
    + [39, 38, 37, 36, 41, 40]  # Eye 42..47.
    + [54, 53, 52, 51, 50, 49, 48]  # Outer lip top 48..54.
    + [59, 58, 57, 56, 55]  # Outer lip bottom 55..59.
    + [64, 63, 62, 61, 60]  # Inner lip top 60..64.
    + [67, 66, 65])  # Inner lip bottom 65..67.

# The images REFERENCE_68 was made from (files of ../shared/data/faces, and
# skimage.data.astronaut()); see the module doc.
REFERENCE_SOURCES = (
    'astronaut',
    'biden.jpg',
    'obama-1080p.jpg',
    'obama.jpg',
    'obama3.jpg',
    'test_alex_lacamoire1.jpg',
    'train_alex_lacamoire_img1.jpg',
    'train_biden_biden2.jpg',
    'train_rose_leslie_img1.jpg',
    'train_rose_leslie_img2.jpg',
)
REFERENCE_68 = np.array([
    [-1.1242, 0.1153], [-1.1119, 0.4062], [-1.0850, 0.6970], [-1.0380, 0.9917],
    [-0.9370, 1.2653], [-0.7650, 1.5042], [-0.5425, 1.7063], [-0.2920, 1.8653],
    [0.0000, 1.9111], [0.2920, 1.8653], [0.5425, 1.7063], [0.7650, 1.5042],
    [0.9370, 1.2653], [1.0380, 0.9917], [1.0850, 0.6970], [1.1119, 0.4062],
    [1.1242, 0.1153], [-0.9257, -0.0999], [-0.7984, -0.2634], [-0.5945, -0.3286],
    [-0.3764, -0.3217], [-0.1679, -0.2526], [0.1679, -0.2526], [0.3764, -0.3217],
    [0.5945, -0.3286], [0.7984, -0.2634], [0.9257, -0.0999], [0.0000, -0.0515],
    [0.0000, 0.1388], [0.0000, 0.3270], [0.0000, 0.5232], [-0.2541, 0.6544],
    [-0.1309, 0.6895], [0.0000, 0.7238], [0.1309, 0.6895], [0.2541, 0.6544],
    [-0.6911, 0.0149], [-0.5712, -0.0624], [-0.4292, -0.0652], [-0.2983, 0.0249],
    [-0.4358, 0.0428], [-0.5745, 0.0450], [0.2983, 0.0249], [0.4292, -0.0652],
    [0.5712, -0.0624], [0.6911, 0.0149], [0.5745, 0.0450], [0.4358, 0.0428],
    [-0.5184, 1.0045], [-0.3305, 0.9406], [-0.1441, 0.9135], [0.0000, 0.9434],
    [0.1441, 0.9135], [0.3305, 0.9406], [0.5184, 1.0045], [0.3379, 1.1745],
    [0.1529, 1.2474], [0.0000, 1.2642], [-0.1529, 1.2474], [-0.3379, 1.1745],
    [-0.4504, 1.0145], [-0.1460, 0.9991], [0.0000, 1.0173], [0.1460, 0.9991],
    [0.4504, 1.0145], [0.1477, 1.1110], [0.0000, 1.1286], [-0.1477, 1.1110],
], np.float64)


def _landmarks(landmarks) -> np.ndarray:
  lm = np.asarray(landmarks, np.float64)
  if lm.shape != (68, 2):
    raise ValueError(f'expected [68, 2] landmarks, got {lm.shape}')
  return lm


# ---------------------------------------------------------------------------- head pose
def camera_matrix(image_shape: Sequence[int]) -> np.ndarray:
  """The intrinsics K float64 [3, 3] for an image of shape (H, W[, C]) (see module doc)."""
  height, width = int(image_shape[0]), int(image_shape[1])
  return np.array([[width, 0.0, (width - 1) / 2.0],
                   [0.0, width, (height - 1) / 2.0],
                   [0.0, 0.0, 1.0]])


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), float64 [3, 3]; angles in degrees."""
  y, p, r = np.radians([yaw, pitch, roll])
  rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
  ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
  rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
  return rz @ ry @ rx


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
  """(yaw, pitch, roll) degrees float64 [3] with R = Rz(roll) Ry(yaw) Rx(pitch).

  Yaw is in [-90, 90]; at yaw = +-90 (gimbal lock, never reached by a face whose six
  landmarks are visible) pitch absorbs the roll.
  """
  r = np.asarray(rotation, np.float64)
  yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
  if abs(r[2, 0]) < 1.0 - 1e-9:
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
  else:
    pitch = np.arctan2(-r[1, 2], r[1, 1])
    roll = 0.0
  return np.degrees([yaw, pitch, roll])


def project_model(pose: Sequence[float], image_shape: Sequence[int],
                  translation: Optional[Sequence[float]] = None) -> np.ndarray:
  """Image positions float64 [6, 2] of MODEL_POINTS_3D seen in pose (yaw, pitch, roll).

  The inverse of `head_pose` for synthetic checks. translation: the nose tip's camera
  coordinates (default: on the optical axis at depth 4 x image width, where a frontal
  model's outer eye corners are 450 / 4 = 112.5 px apart whatever the image size).
  """
  if translation is None:
    translation = (0.0, 0.0, 4.0 * float(image_shape[1]))
  rvec, _ = cv2.Rodrigues(rotation_from_euler(*pose))
  points, _ = cv2.projectPoints(MODEL_POINTS_3D, rvec,
                                np.asarray(translation, np.float64).reshape(3, 1),
                                camera_matrix(image_shape), None)
  return points.reshape(-1, 2)


def _reprojection_rms(rvec, tvec, image_points, k) -> float:
  points, _ = cv2.projectPoints(MODEL_POINTS_3D, rvec, tvec, k, None)
  return float(np.sqrt(np.mean(np.sum((points.reshape(-1, 2) - image_points) ** 2, -1))))


def _facing_camera(rvec, tvec) -> bool:
  """The head is in front of the camera and its face (model -z) points toward it."""
  rotation, _ = cv2.Rodrigues(rvec)
  return float(np.ravel(tvec)[2]) > 0 and rotation[2, 2] > 0


def solve_pose(image_points: np.ndarray, image_shape: Sequence[int]
               ) -> tuple[np.ndarray, np.ndarray, float]:
  """PnP of MODEL_POINTS_3D onto their image points [6, 2] (model order).

  Returns:
    (rvec [3, 1], tvec [3, 1], RMS reprojection error in px): the model -> camera
    rotation (Rodrigues vector) and the nose tip's camera coordinates.
  """
  pts = np.ascontiguousarray(np.asarray(image_points, np.float64).reshape(-1, 1, 2))
  k = camera_matrix(image_shape)
  candidates = []
  # LM from a frontal start: the eye-corner distance gives the depth, the nose the offset.
  eye_px = max(float(np.linalg.norm(pts[3, 0] - pts[2, 0])), 1e-6)
  depth = k[0, 0] * float(MODEL_POINTS_3D[3, 0] - MODEL_POINTS_3D[2, 0]) / eye_px
  nose = pts[0, 0]
  t0 = np.array([[(nose[0] - k[0, 2]) * depth / k[0, 0]],
                 [(nose[1] - k[1, 2]) * depth / k[1, 1]], [depth]])
  ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS_3D, pts, k, None, np.zeros((3, 1)), t0.copy(),
                                useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
  if ok:
    candidates.append((rvec, tvec))
  # SQPnP finds the global optimum of its (object-space) cost, a guard against the LM
  # start landing in the wrong basin for strongly turned faces.
  ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS_3D, pts, k, None, flags=cv2.SOLVEPNP_SQPNP)
  if ok:
    rvec, tvec = cv2.solvePnPRefineLM(MODEL_POINTS_3D, pts, k, None, rvec, tvec)
    candidates.append((rvec, tvec))
  scored = sorted(
      ((_reprojection_rms(r, t, pts.reshape(-1, 2), k), not _facing_camera(r, t), r, t)
       for r, t in candidates), key=lambda c: (c[1], c[0]))
  if not scored:
    raise RuntimeError('solvePnP failed')
  rms, _, rvec, tvec = scored[0]
  return rvec, tvec, rms


def head_pose(landmarks68, image_shape: Sequence[int]) -> np.ndarray:
  """Head pose (yaw, pitch, roll) in degrees from 68 landmarks (see module doc).

  Args:
    landmarks68: [68, 2] (x, y) pixel-index coordinates, iBUG order (e.g.
      `fsjax.faces.detect.Face.landmarks68`).
    image_shape: (H, W[, C]) of the image the landmarks are in (e.g. `image.shape`); it
      fixes the focal length and principal point.

  Returns:
    float64 [3]: (yaw, pitch, roll) degrees.
  """
  lm = _landmarks(landmarks68)
  rvec, _, _ = solve_pose(lm[list(MODEL_LANDMARKS)], image_shape)
  rotation, _ = cv2.Rodrigues(rvec)
  return euler_from_rotation(rotation)


def head_pose_batch(landmarks68, image_shapes) -> np.ndarray:
  """`head_pose` of landmarks [N, 68, 2]; image_shapes is one (H, W) for all or [N, 2].

  Returns:
    float64 [N, 3] (yaw, pitch, roll) degrees.
  """
  lms = np.asarray(landmarks68, np.float64).reshape(-1, 68, 2)
  shapes = np.asarray(image_shapes)
  if shapes.ndim == 1:
    shapes = np.broadcast_to(shapes, (len(lms), len(shapes)))
  return np.stack([head_pose(lm, s) for lm, s in zip(lms, shapes)]) if len(lms) else (
      np.zeros((0, 3)))


# --------------------------------------------------------------------------- expression
def canonical_frame(landmarks68) -> np.ndarray:
  """Landmarks [68, 2] moved by the similarity that puts the eye centres (means of
  36-41 and 42-47) at (-0.5, 0) and (0.5, 0); float64 [68, 2]."""
  lm = _landmarks(landmarks68)
  src = np.stack([lm[RIGHT_EYE_68].mean(axis=0), lm[LEFT_EYE_68].mean(axis=0)])
  m = align_lib.similarity_transform(src, np.array([[-0.5, 0.0], [0.5, 0.0]]))
  return lm @ m[:, :2].T + m[:, 2]


def mirror(landmarks68) -> np.ndarray:
  """The landmarks of the horizontally mirrored face (x -> -x, points renumbered)."""
  lm = _landmarks(landmarks68).copy()
  lm[:, 0] = -lm[:, 0]
  return lm[MIRROR_68]


def procrustes(points, reference) -> np.ndarray:
  """points [N, 2] mapped by the least-squares similarity onto reference [N, 2]."""
  points = np.asarray(points, np.float64)
  m = align_lib.similarity_transform(points, reference)
  return points @ m[:, :2].T + m[:, 2]


def mean_shape(shapes, symmetric: bool = True, iterations: int = 20) -> np.ndarray:
  """Generalised Procrustes mean of landmark sets [K, 68, 2], in `canonical_frame`.

  Each shape is put in the canonical frame (with its mirror image too when symmetric, so
  the mean is left-right symmetric), then repeatedly aligned on the inner points 17-67
  to the current mean, which is re-normalised to the canonical frame.

  Returns:
    float64 [68, 2].
  """
  shapes = [canonical_frame(s) for s in np.asarray(shapes, np.float64).reshape(-1, 68, 2)]
  if symmetric:
    shapes += [mirror(s) for s in shapes]
  shapes = np.stack(shapes)
  mean = canonical_frame(shapes.mean(axis=0))
  for _ in range(iterations):
    aligned = []
    for s in shapes:
      m = align_lib.similarity_transform(s[INNER_68], mean[INNER_68])
      aligned.append(s @ m[:, :2].T + m[:, 2])
    new = canonical_frame(np.mean(aligned, axis=0))
    if np.abs(new - mean).max() < 1e-10:
      break
    mean = new
  return new


def expression_descriptor(landmarks68, reference: Optional[np.ndarray] = None
                          ) -> np.ndarray:
  """The expression descriptor of a face (see module doc), float64 [102].

  Args:
    landmarks68: [68, 2] (x, y) in any pixel frame (only the shape matters).
    reference: [68, 2] reference face (default REFERENCE_68).

  Returns:
    float64 [102]: inner points 17-67 Procrustes-aligned onto the reference's, minus the
    reference's, flattened (x, y interleaved); units of the reference eye distance.
  """
  ref = (REFERENCE_68 if reference is None else np.asarray(reference, np.float64))[INNER_68]
  aligned = procrustes(_landmarks(landmarks68)[INNER_68], ref)
  return (aligned - ref).reshape(-1)


def expression_descriptor_batch(landmarks68, reference: Optional[np.ndarray] = None
                                ) -> np.ndarray:
  """`expression_descriptor` of landmarks [N, 68, 2] -> float64 [N, 102]."""
  lms = np.asarray(landmarks68, np.float64).reshape(-1, 68, 2)
  return np.stack([expression_descriptor(lm, reference) for lm in lms]) if len(lms) else (
      np.zeros((0, 102)))
