"""Pastes a swapped, aligned face crop back into the full frame without a visible seam.

The pieces, all numpy/OpenCV on the host:
- `face_mask`: a soft mask in crop coordinates from the 68 landmarks (convex hull of the jaw,
  brows and a forehead extension above the brows), eroded and Gaussian-blurred, faded to zero
  at the crop border;
- `match_color`: moves the swapped face's colour statistics (mean and std per channel in CIE
  LAB, weighted by the mask) to those of the target face it replaces;
- `paste`: warps the crop and its mask into the frame with the inverse of the alignment
  transform and alpha-blends them; pixels where the warped mask is 0 are copied unchanged.
"""

from typing import Optional

import cv2
import numpy as np

from fsjax.faces import align

# Brow landmarks (iBUG 68 numbering) lifted to extend the hull over the forehead.
_BROWS = np.arange(17, 27)
_CHIN = 8


def hull_points(landmarks68: np.ndarray, forehead: float = 0.3) -> np.ndarray:
  """Convex hull of the 68 landmarks plus the brows lifted by `forehead` x (brows - chin).

  Args:
    landmarks68: [68, 2] (x, y) points in any coordinate frame.
    forehead: how far to lift the brow points, as a fraction of the chin-to-brow distance.

  Returns:
    float64 [K, 2] hull vertices.
  """
  lm = np.asarray(landmarks68, np.float64)
  up = lm[_BROWS].mean(axis=0) - lm[_CHIN]
  lifted = lm[_BROWS] + forehead * up
  points = np.concatenate([lm, lifted], axis=0)
  return cv2.convexHull(points.astype(np.float32))[:, 0, :].astype(np.float64)


def face_mask(landmarks68: np.ndarray, size: int, *, erosion: float = 0.05,
              blur: float = 0.05, forehead: float = 0.3) -> np.ndarray:
  """Soft face mask in the coordinates of an aligned crop.

  Args:
    landmarks68: [68, 2] landmarks in crop pixel coordinates.
    size: crop side S.
    erosion: erosion radius as a fraction of the face size (sqrt of the hull area).
    blur: Gaussian sigma as a fraction of the face size; 0 gives a hard mask.
    forehead: see `hull_points`.

  Returns:
    float32 [S, S] in [0, 1]; exactly 0 in a band of at least one pixel at the crop border.
  """
  hull = hull_points(landmarks68, forehead)
  scale = float(np.sqrt(max(cv2.contourArea(hull.astype(np.float32)), 1.0)))
  shift = 4  # sub-pixel bits for the polygon fill
  mask = np.zeros((size, size), np.uint8)
  cv2.fillConvexPoly(mask, np.round(hull * (1 << shift)).astype(np.int32), 255,
                     lineType=cv2.LINE_AA, shift=shift)
  mask = mask.astype(np.float32) / 255.0
  radius = int(round(erosion * scale))
  if radius > 0:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    mask = cv2.erode(mask, kernel)
  sigma = blur * scale
  if sigma > 0:
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
  # Fade to zero at the crop border so the warped footprint's edge never shows.
  margin = max(2.0, 2.0 * sigma)
  ramp = np.clip((np.arange(size, dtype=np.float32) + 0.5 - 1.0) / margin, 0.0, 1.0)
  ramp = np.minimum(ramp, ramp[::-1])
  mask = mask * np.minimum(ramp[:, None], ramp[None, :])
  mask[mask < 1.0 / 512.0] = 0.0  # below half a grey level: treat as outside
  return np.clip(mask, 0.0, 1.0).astype(np.float32)


def match_color(swapped: np.ndarray, target: np.ndarray, mask: np.ndarray,
                strength: float = 1.0) -> np.ndarray:
  """Colour transfer of swapped toward target within the mask (mean/std per LAB channel).

  Args:
    swapped: [S, S, 3] RGB in [0, 255] (uint8 or float).
    target: [S, S, 3] RGB in [0, 255], the aligned target crop.
    mask: [S, S] weights in [0, 1].
    strength: 0 = no change, 1 = full transfer.

  Returns:
    float32 [S, S, 3] RGB in [0, 255]: corrected within the mask's bounding box (and an
    8 px margin); further out, where the mask is 0, `swapped` as given.
  """
  swapped = np.asarray(swapped, np.float32)
  weights = np.asarray(mask, np.float32)
  total = float(weights.sum())
  if strength <= 0 or total < 1.0:
    return swapped
  # Only the mask's box matters (weights and paste-back are 0 elsewhere): less to convert.
  rows, cols = np.flatnonzero(weights.any(axis=1)), np.flatnonzero(weights.any(axis=0))
  y0, y1 = max(rows[0] - 8, 0), min(rows[-1] + 9, weights.shape[0])
  x0, x1 = max(cols[0] - 8, 0), min(cols[-1] + 9, weights.shape[1])
  full = swapped
  swapped = swapped[y0:y1, x0:x1]
  target = np.asarray(target, np.float32)[y0:y1, x0:x1]
  weights = weights[y0:y1, x0:x1]
  lab_s = cv2.cvtColor(swapped / 255.0, cv2.COLOR_RGB2LAB)
  lab_t = cv2.cvtColor(target / 255.0, cv2.COLOR_RGB2LAB)
  w = weights.reshape(-1).astype(np.float64) / total

  def moments(lab):
    # Weighted mean and std as matrix products (float64): much faster than broadcast sums.
    flat = lab.reshape(-1, 3).astype(np.float64)
    mean = w @ flat
    var = w @ (flat * flat) - mean * mean
    return mean.astype(np.float32), (np.sqrt(np.maximum(var, 0.0)) + 1e-3).astype(np.float32)

  mean_s, std_s = moments(lab_s)
  mean_t, std_t = moments(lab_t)
  ratio = np.clip(std_t / std_s, 0.5, 2.0)
  corrected = (lab_s - mean_s) * ratio + mean_t
  lab = lab_s + strength * (corrected - lab_s)
  lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
  rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
  out = full.copy()
  out[y0:y1, x0:x1] = np.clip(rgb * 255.0, 0.0, 255.0)
  return out


def paste(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
          frame_mask: Optional[np.ndarray] = None, out: Optional[np.ndarray] = None
          ) -> np.ndarray:
  """Blends an aligned crop back into the frame through the inverse alignment transform.

  Works on the bounding box of the crop's footprint only.

  Args:
    frame: uint8 [H, W, 3], the target frame (not modified).
    crop: [S, S, 3] RGB in [0, 255] (uint8 or float), the swapped aligned face.
    mask: float32 [S, S] in [0, 1], the blend weight in crop coordinates.
    matrix: float [2, 3] frame -> crop affine transform (as returned by the aligner).
    frame_mask: optional float32 [H, W]; the warped mask is max-combined into it in place.
    out: optional uint8 [H, W, 3] written instead of a copy of the frame (may be `frame`
      itself: a video frame is then pasted in place).

  Returns:
    uint8 [H, W, 3]: the blended frame; every pixel where the warped mask is 0 is the frame's.
  """
  frame = np.asarray(frame)
  out = frame.copy() if out is None else out
  height, width = frame.shape[:2]
  matrix = np.asarray(matrix, np.float64)
  crop = np.asarray(crop, np.float32)
  mask = np.asarray(mask, np.float32)
  size = crop.shape[0]
  # Frame pixels per crop pixel; shrink the crop first (INTER_AREA) when pasting it smaller.
  scale = 1.0 / np.sqrt(abs(np.linalg.det(matrix[:, :2])))
  if scale < 0.75:
    small = max(2, int(round(size * scale)))
    g = small / size
    crop = cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (small, small), interpolation=cv2.INTER_AREA)
    # small = (crop + 0.5) * g - 0.5
    matrix = align.compose_affine(np.array([[g, 0.0, 0.5 * g - 0.5], [0.0, g, 0.5 * g - 0.5]]),
                                  matrix)
    size = small
  corners = align.transform_points(
      align.invert_affine(matrix),
      np.array([[-0.5, -0.5], [size, -0.5], [-0.5, size], [size, size]], np.float64))
  x0 = max(int(np.floor(corners[:, 0].min())) - 1, 0)
  y0 = max(int(np.floor(corners[:, 1].min())) - 1, 0)
  x1 = min(int(np.ceil(corners[:, 0].max())) + 2, width)
  y1 = min(int(np.ceil(corners[:, 1].max())) + 2, height)
  if x1 <= x0 or y1 <= y0:
    return out
  # Region pixel q maps to crop pixel A (q + o) + t.
  local = matrix.copy()
  local[:, 2] += local[:, :2] @ np.array([x0, y0], np.float64)
  flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
  box = (x1 - x0, y1 - y0)
  face = cv2.warpAffine(crop, local, box, flags=flags, borderMode=cv2.BORDER_REPLICATE)
  alpha = cv2.warpAffine(mask, local, box, flags=flags,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
  alpha[alpha < 1.0 / 512.0] = 0.0
  region = frame[y0:y1, x0:x1].astype(np.float32)
  # region + 0 * (face - region) is region exactly, so where alpha is 0 the frame's pixels
  # come back bit for bit without a masked copy.
  face -= region
  face *= alpha[..., None]
  face += region
  out[y0:y1, x0:x1] = np.clip(np.rint(face, out=face), 0, 255).astype(np.uint8)
  if frame_mask is not None:
    np.maximum(frame_mask[y0:y1, x0:x1], alpha, out=frame_mask[y0:y1, x0:x1])
  return out
