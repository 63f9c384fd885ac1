"""Face alignment: landmarks -> square crop plus the 2x3 affine that made it.

Two recipes, both returning `(crop uint8 [S, S, 3], M float32 [2, 3])` where M maps source
pixel coordinates to crop pixel coordinates (`transform_points(M, lm)`; paste a crop back
with `invert_affine(M)`):

- 'arcface': the least-squares similarity (Umeyama) taking the 5 ArcFace points to the
  InsightFace 112x112 template, or to the template scaled for size S (`arcface_template`).
  At S = 256 the face fills the crop at 0.85 scale: rows/cols 19:237 (218 px) of the
  256 crop hold exactly the 112 ArcFace alignment, which is what the identity encoder's
  `identity_crop(x, 'crop_19_237')` cuts out and resizes to 112.
- 'ffhq': the FFHQ recipe (Karras et al. 2019) from the 68 landmarks: an oriented square
  centred 0.1 of the eye-to-mouth vector below the eye midpoint, side
  max(4 x eye distance, 3.6 x eye-to-mouth distance), mapped onto the S x S output.
  The face fills the whole crop; the identity encoder reads it with mode 'resize'.
- 'ghost224': GHOST's (ai-forever/sber-swap) preprocessing, what its AEI-Net weights expect:
  the similarity taking the 5 points to the 112 template x 2 (insightface
  `estimate_norm(kps, 224)`) into a 224 crop (plain cv2.warpAffine, black border), then
  cv2.resize (bilinear) to S when S != 224 (GHOST feeds its generator the 256 resize).

Pixel coordinates are pixel-index coordinates (pixel centres at integers), as dlib,
InsightFace and cv2.warpAffine use them.

Borders (where the crop reaches past the photo): 'arcface' fills with black
(cv2.BORDER_CONSTANT, as InsightFace's norm_crop does, so crops match ArcFace training
data); 'ffhq' mirrors the photo (cv2.BORDER_REFLECT_101, as FFHQ's reflect padding, without
FFHQ's extra blur), so generator training crops have no hard black wedges. Either can be
overridden with `border=`.

Downscaling warps are anti-aliased: when the transform shrinks the face by more than 4/3,
the region it reads is first reduced with cv2.INTER_AREA to the output scale, and the
remaining (rotation) warp is bilinear. Only the region the crop reads is touched, so
aligning a face in a very large photo costs little.
"""

import math
from typing import Any, Optional

import cv2
import numpy as np

ALIGN_MODES = ('arcface', 'ffhq', 'ghost224')

# InsightFace's 5-point template for 112x112 crops (left eye, right eye, nose tip, left
# mouth corner, right mouth corner; left/right as seen in the image), pixel-index coords.
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], np.float32)

BORDERS = {
    'constant': cv2.BORDER_CONSTANT,
    'reflect': cv2.BORDER_REFLECT_101,
    'replicate': cv2.BORDER_REPLICATE,
}
DEFAULT_BORDER = {'arcface': 'constant', 'ffhq': 'reflect', 'ghost224': 'constant'}

# Rows/cols of a 256 'arcface' crop that hold the 112 ArcFace alignment (see module doc).
CROP_256_LO, CROP_256_HI = 19, 237


def arcface_template(size: int = 112) -> np.ndarray:
  """The 5-point ArcFace template for an S x S crop, float32 [5, 2] pixel-index coords.

  At S = 112 it is ARCFACE_TEMPLATE_112. Otherwise it is the 112 template placed in the
  218-px window 19:237 of a 256 crop (scale 218/256 = 0.85) and the 256 crop scaled by
  S / 256. Nominally q = p * (218 / 112) * (S / 256) + 19 * S / 256; exactly, so that
  `fsjax.models.arcface.identity_crop(x, 'crop_19_237')` (which samples the 112 pixels at
  linspace(19, 236, 112) with align_corners=True, then maps 256 positions to S with
  pixel-centre scaling) reads back exactly the 112 template positions:
    q_256 = 19 + p * 217 / 111,   q_S = (q_256 + 0.5) * S / 256 - 0.5.
  The two forms differ by at most 0.8 px at S = 256 (0.4 px after the crop to 112).

  Args:
    size: output crop side S (pixels).

  Returns:
    float32 [5, 2] template (x, y).
  """
  if size == 112:
    return ARCFACE_TEMPLATE_112.copy()
  p = ARCFACE_TEMPLATE_112.astype(np.float64)
  q256 = CROP_256_LO + p * (CROP_256_HI - CROP_256_LO - 1) / 111.0
  return ((q256 + 0.5) * (size / 256.0) - 0.5).astype(np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares similarity (rotation, uniform scale, translation) src -> dst (Umeyama).

  Args:
    src: [N, 2] points, N >= 2, not all equal.
    dst: [N, 2] points.

  Returns:
    float64 [2, 3] M minimising sum |M [src, 1] - dst|^2 (no reflection).
  """
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
    raise ValueError(f'expected two [N, 2] point sets, got {src.shape} and {dst.shape}')
  mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
  src_c, dst_c = src - mu_src, dst - mu_dst
  var_src = (src_c ** 2).sum() / len(src)
  if var_src <= 0:
    raise ValueError('degenerate source points (all equal)')
  cov = dst_c.T @ src_c / len(src)
  u, s, vt = np.linalg.svd(cov)
  d = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:
    d[-1] = -1.0
  rotation = u @ np.diag(d) @ vt
  scale = float((s * d).sum() / var_src)
  m = np.zeros((2, 3))
  m[:, :2] = scale * rotation
  m[:, 2] = mu_dst - scale * rotation @ mu_src
  return m


def _to3(m: np.ndarray) -> np.ndarray:
  return np.vstack([np.asarray(m, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def invert_affine(m: np.ndarray) -> np.ndarray:
  """Inverse of a [2, 3] affine (crop -> source when m is source -> crop), float32 [2, 3]."""
  return np.linalg.inv(_to3(m))[:2].astype(np.float32)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
  """The [2, 3] affine x -> outer(inner(x)), float64."""
  return (_to3(outer) @ _to3(inner))[:2]


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Applies a [2, 3] affine to points [..., 2] (x, y); returns float32 [..., 2]."""
  m = np.asarray(m, np.float64).reshape(2, 3)
  points = np.asarray(points, np.float64)
  return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def warp_affine(image: np.ndarray, m: np.ndarray, size: int, border: str = 'constant',
                antialias: bool = True) -> np.ndarray:
  """Resamples image [H, W, C] into an S x S crop with crop = m(source), bilinear.

  Equivalent to cv2.warpAffine(image, m, (S, S), INTER_LINEAR, border) except that the
  read region is cut out first (cheap on huge photos) and, with antialias, shrunk with
  INTER_AREA when m scales down by more than 4/3 (no aliasing on large faces).

  Args:
    image: [H, W, C] (uint8 stays uint8), any C that cv2 supports.
    m: [2, 3] source -> crop affine in pixel-index coordinates.
    size: crop side S.
    border: 'constant' (black), 'reflect' (mirror without repeating the edge) or 'replicate'.
    antialias: shrink before warping when downscaling.

  Returns:
    [S, S, C] crop, image's dtype.
  """
  if border not in BORDERS:
    raise ValueError(f'unknown border {border!r}; known: {sorted(BORDERS)}')
  m = np.asarray(m, np.float64).reshape(2, 3)
  height, width = image.shape[:2]
  scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
  if scale <= 0:
    raise ValueError('singular affine')
  # Source region the crop reads (+ margin for the filters, + its mirror for 'reflect').
  corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5],
                      [size - 0.5, size - 0.5]])
  src = transform_points(np.linalg.inv(_to3(m))[:2], corners).astype(np.float64)
  margin = 2.0 / scale + 2.0
  x0, y0 = np.floor(src.min(axis=0) - margin).astype(int)
  x1, y1 = np.ceil(src.max(axis=0) + margin).astype(int)
  if border == 'reflect':
    x1, y1 = max(x1, -x0 + 1), max(y1, -y0 + 1)
    x0, y0 = min(x0, 2 * width - x1 - 1), min(y0, 2 * height - y1 - 1)
  x0, y0 = max(x0, 0), max(y0, 0)
  x1, y1 = min(x1, width), min(y1, height)
  if x1 - x0 < 2 or y1 - y0 < 2:  # The crop lies (almost) outside the photo.
    x0, y0, x1, y1 = 0, 0, width, height
  roi = image[y0:y1, x0:x1]
  m = compose_affine(m, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))
  if antialias and scale < 0.75:
    rh, rw = roi.shape[:2]
    nw, nh = max(2, round(rw * scale)), max(2, round(rh * scale))
    roi = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
    gx, gy = nw / rw, nh / rh
    # small = (roi + 0.5) * g - 0.5  =>  roi = (small + 0.5) / g - 0.5.
    unshrink = np.array([[1.0 / gx, 0.0, 0.5 / gx - 0.5], [0.0, 1.0 / gy, 0.5 / gy - 0.5]])
    m = compose_affine(m, unshrink)
  return cv2.warpAffine(np.ascontiguousarray(roi), m, (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=BORDERS[border], borderValue=0)


def align_arcface(image: np.ndarray, lm5: np.ndarray, size: int = 112,
                  border: str = 'constant') -> tuple[np.ndarray, np.ndarray]:
  """ArcFace 5-point alignment.

  Args:
    image: uint8 [H, W, 3].
    lm5: [5, 2] ArcFace points (see fsjax.faces.detect.Face.landmarks5) in image pixels.
    size: crop side S (112 = InsightFace; 256 = 0.85 scale, see `arcface_template`).
    border: see `warp_affine`.

  Returns:
    (crop uint8 [S, S, 3], M float32 [2, 3] source -> crop).
  """
  m = similarity_transform(lm5, arcface_template(size))
  return warp_affine(image, m, size, border), m.astype(np.float32)


GHOST_CROP = 224  # side of GHOST's aligned crop


def ghost_template(size: int = GHOST_CROP) -> np.ndarray:
  """GHOST's 5-point target in an S x S crop, float32 [5, 2] pixel-index coords.

  At S = 224 it is ARCFACE_TEMPLATE_112 * 224 / 112 (insightface's estimate_norm at 224);
  otherwise those points carried through cv2.resize's 224 -> S pixel-centre scaling:
  q_S = (q_224 + 0.5) * S / 224 - 0.5.
  """
  q224 = ARCFACE_TEMPLATE_112.astype(np.float64) * (GHOST_CROP / 112.0)
  if size == GHOST_CROP:
    return q224.astype(np.float32)
  return ((q224 + 0.5) * (size / GHOST_CROP) - 0.5).astype(np.float32)


def align_ghost(image: np.ndarray, lm5: np.ndarray, size: int = GHOST_CROP,
                border: str = 'constant', antialias: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
  """GHOST's alignment: the 224 crop of `ghost_template`, resized to S as GHOST does.

  Args:
    image: uint8 [H, W, 3].
    lm5: [5, 2] ArcFace points in image pixels.
    size: crop side S (224 = GHOST's crop; 256 = its generator input).
    border: see `warp_affine` (GHOST: black).
    antialias: shrink before warping large faces (GHOST does not: False reproduces it).

  Returns:
    (crop uint8 [S, S, 3], M float32 [2, 3] source -> S crop).
  """
  m = similarity_transform(lm5, ghost_template(GHOST_CROP))
  if antialias:
    crop = warp_affine(image, m, GHOST_CROP, border)
  else:  # bit-exact cv2 (warp_affine's region cut shifts cv2's 1/32 px coordinate rounding)
    if border not in BORDERS:
      raise ValueError(f'unknown border {border!r}; known: {sorted(BORDERS)}')
    crop = cv2.warpAffine(np.ascontiguousarray(image), m, (GHOST_CROP, GHOST_CROP),
                          flags=cv2.INTER_LINEAR, borderMode=BORDERS[border], borderValue=0)
  if size != GHOST_CROP:
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    g = size / GHOST_CROP
    m = compose_affine(np.array([[g, 0.0, 0.5 * g - 0.5], [0.0, g, 0.5 * g - 0.5]]), m)
  return crop, m.astype(np.float32)


def ffhq_quad(lm68: np.ndarray) -> np.ndarray:
  """FFHQ's oriented crop square from 68 landmarks, float64 [4, 2] source pixel coords.

  Corners in the order top-left, bottom-left, bottom-right, top-right of the output (the
  outer edges of the output's corner pixels).
  """
  lm = np.asarray(lm68, np.float64)
  if lm.shape != (68, 2):
    raise ValueError(f'expected [68, 2] landmarks, got {lm.shape}')
  eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
  eye_avg = 0.5 * (eye_left + eye_right)
  eye_to_eye = eye_right - eye_left
  mouth_avg = 0.5 * (lm[48] + lm[54])
  eye_to_mouth = mouth_avg - eye_avg
  x = eye_to_eye - np.flipud(eye_to_mouth) * [-1.0, 1.0]
  x /= np.hypot(*x)
  x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
  y = np.flipud(x) * [-1.0, 1.0]
  c = eye_avg + eye_to_mouth * 0.1
  return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_transform(lm68: np.ndarray, size: int = 256) -> np.ndarray:
  """float64 [2, 3] source -> crop affine of the FFHQ alignment at S x S."""
  quad = ffhq_quad(lm68)
  lo, hi = -0.5, size - 0.5  # Outer edges of the output's corner pixels.
  dst = np.array([[lo, lo], [lo, hi], [hi, hi], [hi, lo]])
  # Exact for the 3 corners used (the quad is a square, so the 4th agrees).
  src3 = np.hstack([quad[:3], np.ones((3, 1))])
  return np.linalg.solve(src3, dst[:3]).T


def align_ffhq(image: np.ndarray, lm68: np.ndarray, size: int = 256,
               border: str = 'reflect') -> tuple[np.ndarray, np.ndarray]:
  """FFHQ-style alignment from 68 landmarks.

  Args:
    image: uint8 [H, W, 3].
    lm68: [68, 2] iBUG landmarks in image pixels.
    size: crop side S.
    border: see `warp_affine` (default mirrors the photo, as FFHQ does).

  Returns:
    (crop uint8 [S, S, 3], M float32 [2, 3] source -> crop).
  """
  m = ffhq_transform(lm68, size)
  return warp_affine(image, m, size, border), m.astype(np.float32)


def align_face(image: np.ndarray, face: Any, mode: str = 'arcface', size: int = 256,
               border: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
  """Aligns a detected face (fsjax.faces.detect.Face) with `mode` 'arcface', 'ffhq', 'ghost224'.

  Args:
    image: uint8 [H, W, 3] the face was detected in.
    face: object with landmarks5 [5, 2] ('arcface', 'ghost224') / landmarks68 [68, 2] ('ffhq').
    mode: 'arcface', 'ffhq' or 'ghost224'.
    size: crop side S.
    border: None = the mode's default (DEFAULT_BORDER), else see `warp_affine`.

  Returns:
    (crop uint8 [S, S, 3], M float32 [2, 3] source -> crop).
  """
  if mode not in ALIGN_MODES:
    raise ValueError(f'unknown alignment mode {mode!r}; known: {ALIGN_MODES}')
  border = border or DEFAULT_BORDER[mode]
  if mode == 'arcface':
    return align_arcface(image, face.landmarks5, size, border)
  if mode == 'ghost224':
    return align_ghost(image, face.landmarks5, size, border)
  return align_ffhq(image, face.landmarks68, size, border)
