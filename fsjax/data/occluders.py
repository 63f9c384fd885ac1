"""Synthetic occluders for HEAR-Net training (numpy only): RGBA cut-outs pasted on faces.

The recipe of shared/design/faceshifter.md ("HEAR-Net"): hands and objects as RGBA cut-outs,
pasted at scale 0.5-1.0 of the face size, rotation +-90 degrees, random position, in the mix
25% none / 25% hand / 25% object / 25% both; half of the training pairs are same-identity
pairs whose target X_t is an occluded copy of the source X_s.

* Cut-outs: `procedural_occluders` renders a built-in set (hands: palm, four fingers, thumb
  and wrist; objects: microphones, sticks, blobs and boxes such as phones), or
  `load_occluders(occluders_dir)` reads RGBA PNGs from `occluders_dir/hands/` and
  `occluders_dir/objects/` (EgoHands / GTEA hand masks, ShapeNet renders, ...).
  `build_occluders` picks one of the two.
* Pasting: `paste_cutout` (explicit size, angle and centre) and `paste_occluder` (random);
  both return the occluded image and the boolean occluder mask (alpha >= 0.5).
* Mix and pairs: `sample_mix`, `occlude`, `occluded_pair`.

Every random choice comes from the numpy Generator passed in, so results are deterministic
given its state. A cut-out is a uint8 [h, w, 4] array, straight (not premultiplied) alpha,
cropped to its non-transparent pixels. Image coordinates: pixel (x, y) has its centre at
the integer point (x, y); x right, y down.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image

HAND, OBJECT = 'hand', 'object'
MIX_KINDS = ('none', 'hand', 'object', 'both')
PAPER_MIX = (0.25, 0.25, 0.25, 0.25)  # probabilities of MIX_KINDS
PAPER_SCALE = (0.5, 1.0)  # occluder length / face size
PAPER_MAX_ROTATION = 90.0  # degrees, either way
# Face box (x0, y0, x1, y1) as fractions of the image for FFHQ-aligned crops (the framing
# of fsjax.data.synthetic_faces: the face spans ~0.2-0.8 W and ~0.1-0.95 H).
ALIGNED_FACE_BOX = (0.2, 0.1, 0.8, 0.95)
OBJECT_SHAPES = ('microphone', 'stick', 'blob', 'box')

_SKIN_DARK = np.array((0.30, 0.18, 0.12), np.float32)
_SKIN_LIGHT = np.array((0.98, 0.84, 0.74), np.float32)


# ---------------------------------------------------------------------------------------------
# Cut-out sets.


def _check_cutout(cutout: np.ndarray, what: str) -> np.ndarray:
  cutout = np.asarray(cutout)
  if cutout.dtype != np.uint8 or cutout.ndim != 3 or cutout.shape[2] != 4:
    raise ValueError(f'{what}: a cut-out must be uint8 [h, w, 4] (RGBA), got '
                     f'{cutout.dtype} {cutout.shape}')
  if not np.any(cutout[..., 3]):
    raise ValueError(f'{what}: the cut-out is fully transparent')
  return cutout


@dataclasses.dataclass(frozen=True)
class OccluderSet:
  """Hand and object cut-outs (uint8 RGBA [h, w, 4] each); both groups non-empty."""
  hands: tuple[np.ndarray, ...]
  objects: tuple[np.ndarray, ...]

  def __post_init__(self):
    for name in ('hands', 'objects'):
      group = tuple(getattr(self, name))
      if not group:
        raise ValueError(f'OccluderSet needs at least one cut-out in {name!r} (the mix '
                         f'draws {"hand" if name == "hands" else "object"}s)')
      object.__setattr__(self, name, tuple(
          _check_cutout(c, f'{name}[{i}]') for i, c in enumerate(group)))

  def group(self, kind: str) -> tuple[np.ndarray, ...]:
    """The cut-outs of kind HAND or OBJECT."""
    if kind == HAND:
      return self.hands
    if kind == OBJECT:
      return self.objects
    raise ValueError(f'unknown occluder kind {kind!r}; expected {HAND!r} or {OBJECT!r}')


def crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
  """The smallest box of an RGBA [h, w, 4] array holding all its non-transparent pixels."""
  ys, xs = np.nonzero(rgba[..., 3])
  if ys.size == 0:
    raise ValueError('the cut-out is fully transparent')
  return np.ascontiguousarray(rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


def save_cutout(path: str | os.PathLike, cutout: np.ndarray) -> None:
  """Writes a cut-out (uint8 [h, w, 4]) as an RGBA PNG."""
  Image.fromarray(_check_cutout(cutout, os.fspath(path))).save(path, format='PNG')


def load_cutout(path: str | os.PathLike) -> np.ndarray:
  """Reads an RGBA PNG cut-out -> uint8 [h, w, 4], cropped to its non-transparent pixels.

  Raises:
    ValueError: the file is not an image, has no alpha channel (nor a transparent palette
      colour), or is fully transparent.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as im:
      im.load()
      has_alpha = im.mode in ('RGBA', 'LA', 'PA') or 'transparency' in im.info
      if not has_alpha:
        raise ValueError(f'{path}: no alpha channel (mode {im.mode}); occluder cut-outs '
                         f'must be RGBA PNGs, transparent outside the occluder')
      rgba = np.asarray(im.convert('RGBA'), np.uint8)
  except (OSError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
    raise ValueError(f'{path}: not a readable image ({e})') from e
  if not np.any(rgba[..., 3]):
    raise ValueError(f'{path}: fully transparent cut-out')
  return crop_to_alpha(rgba)


def _pngs(folder: str) -> list[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith('.png') and os.path.isfile(os.path.join(folder, f)))


def load_occluders(occluders_dir: str | os.PathLike) -> OccluderSet:
  """Reads the RGBA PNG cut-outs of `occluders_dir/hands/` and `occluders_dir/objects/`.

  Files are read in name order (so the set, and what a seeded draw picks, is reproducible).

  Raises:
    ValueError: the folder is unset, missing or not a folder, a group folder is missing or
      has no PNG, or a PNG is not an RGBA cut-out (`load_cutout`).
  """
  if not occluders_dir:
    raise ValueError('occluders_dir is empty: pass a folder with hands/ and objects/ '
                     'subfolders of RGBA PNG cut-outs')
  root = os.path.expanduser(os.fspath(occluders_dir))
  if not os.path.exists(root):
    raise ValueError(f'occluders_dir {root!r} does not exist')
  if not os.path.isdir(root):
    raise ValueError(f'occluders_dir {root!r} is not a folder')
  groups = {}
  for name in ('hands', 'objects'):
    folder = os.path.join(root, name)
    files = _pngs(folder) if os.path.isdir(folder) else []
    if not files:
      raise ValueError(
          f'occluders_dir {root!r}: no PNG cut-outs in {name}/ (expected the layout '
          f'{root}/hands/*.png and {root}/objects/*.png, RGBA, transparent outside the '
          f'occluder; the mix needs at least one of each)')
    groups[name] = tuple(load_cutout(f) for f in files)
  return OccluderSet(**groups)


def build_occluders(occluders_dir: str | os.PathLike | None = None, seed: int = 0,
                    num_procedural: int = 32, size: int = 256) -> OccluderSet:
  """The cut-outs of `occluders_dir` when set (`load_occluders`), else the built-in set
  (`procedural_occluders` with num_procedural hands and objects of `size` px, from seed).

  Pastes magnify a cut-out by up to (face size / cut-out side), which widens its 1-px soft
  edge as much: render at least at the training image size (32 + 32 at 256 px: ~1 s).
  """
  if occluders_dir:
    return load_occluders(occluders_dir)
  return procedural_occluders(np.random.default_rng(seed), num_procedural, num_procedural,
                              size)


# ---------------------------------------------------------------------------------------------
# Procedural cut-outs. A canvas of size x size pixels spans [-1, 1]^2 (u right, v down); each
# shape is a signed distance field d (< 0 inside) turned into coverage with a one-pixel edge.


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  c = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
  u, v = np.meshgrid(c, c)
  return u, v


def _coverage(d: np.ndarray, size: int) -> np.ndarray:
  return np.clip(0.5 - d * (0.5 * size), 0.0, 1.0)


def _ellipse(u, v, cu, cv, a, b):
  """Approximate signed distance to the ellipse centred (cu, cv) with semi-axes a, b."""
  x, y = u - cu, v - cv
  k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
  k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
  return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _capsule(u, v, a, b, r):
  """Signed distance to the segment a -> b ((u, v) pairs) thickened by radius r."""
  pu, pv = u - a[0], v - a[1]
  bu, bv = b[0] - a[0], b[1] - a[1]
  t = np.clip((pu * bu + pv * bv) / max(bu * bu + bv * bv, 1e-12), 0.0, 1.0)
  return np.sqrt((pu - t * bu) ** 2 + (pv - t * bv) ** 2) - r


def _round_box(u, v, a, b, r):
  """Signed distance to the box |u| <= a, |v| <= b with corners rounded by r."""
  qu, qv = np.abs(u) - a + r, np.abs(v) - b + r
  outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)
  return outside + np.minimum(np.maximum(qu, qv), 0.0) - r


class _Painter:
  """Straight-alpha RGBA float canvas; `paint` composites a colour (or colour map) over it."""

  def __init__(self, size: int):
    self.size = size
    self.rgb = np.zeros((size, size, 3), np.float32)
    self.alpha = np.zeros((size, size), np.float32)

  def paint(self, d, colour, shade=None, opacity=1.0):
    """Composites `colour` [3] (times the per-pixel `shade` [S, S]) where d < 0."""
    a = _coverage(d, self.size) * opacity
    c = np.broadcast_to(np.asarray(colour, np.float32), (3,))
    src = c if shade is None else shade[..., None] * c
    out_a = a + self.alpha * (1.0 - a)
    prem = a[..., None] * src + (self.alpha * (1.0 - a))[..., None] * self.rgb
    self.rgb = np.where(out_a[..., None] > 0, prem / np.maximum(out_a, 1e-6)[..., None], 0.0)
    self.alpha = out_a

  def recolour(self, d, colour, shade=None, opacity=1.0):
    """Paints only over what is already there (details: creases, nails, mesh)."""
    a = _coverage(d, self.size) * opacity
    c = np.broadcast_to(np.asarray(colour, np.float32), (3,))
    src = c if shade is None else shade[..., None] * c
    self.rgb += a[..., None] * (src - self.rgb)

  def cutout(self) -> np.ndarray:
    rgba = np.concatenate([np.clip(self.rgb, 0, 1), self.alpha[..., None]], axis=-1)
    return crop_to_alpha((rgba * 255.0 + 0.5).astype(np.uint8))


def _skin(rng):
  tone = rng.uniform(0.0, 1.0) ** 0.8
  skin = _SKIN_DARK + tone * (_SKIN_LIGHT - _SKIN_DARK)
  return np.clip(skin * rng.uniform(0.92, 1.06, 3), 0.03, 1.0).astype(np.float32)


def _light(rng, u, v, strength):
  """A linear light ramp across the canvas in a random direction: [S, S] around 1."""
  angle = rng.uniform(0, 2 * np.pi)
  return 1.0 + strength * (np.cos(angle) * u + np.sin(angle) * v)


def render_hand(rng: np.random.Generator, size: int = 256) -> np.ndarray:
  """One hand cut-out: palm, four fingers (some curled), thumb and wrist -> uint8 RGBA.

  Random skin tone, left or right hand, finger spread and lengths, lighting direction.
  """
  u, v = _grid(size)
  u = u * (1.0 if rng.uniform() < 0.5 else -1.0)  # mirror: left / right hand
  skin = _skin(rng)
  shade = _light(rng, u, v, 0.12) * (0.9 + 0.1 * np.clip(0.6 - v, 0.0, 1.0))
  palm_w, palm_h = rng.uniform(0.24, 0.32), rng.uniform(0.26, 0.34)
  p = _Painter(size)
  wrist_r = palm_w * rng.uniform(0.6, 0.75)
  d_hand = _capsule(u, v, (0.0, 0.3), (0.0, 0.97 - wrist_r), wrist_r)
  d_hand = np.minimum(d_hand, _ellipse(u, v, 0.0, 0.25, palm_w, palm_h))
  spread = rng.uniform(0.0, 0.16)
  radius = palm_w * rng.uniform(0.2, 0.25)
  base_v = 0.25 - 0.8 * palm_h
  lengths = np.array((0.40, 0.48, 0.46, 0.35)) * rng.uniform(0.85, 1.2)
  creases, nails = [], []
  for i in range(4):
    bu = palm_w * (-0.75 + 0.5 * i)
    angle = spread * (i - 1.5)
    length = lengths[i] * (0.35 if rng.uniform() < 0.15 else rng.uniform(0.9, 1.1))
    tip = (bu + length * math.sin(angle), base_v - length * math.cos(angle))
    d_finger = _capsule(u, v, (bu, base_v + 0.1), tip, radius)
    d_hand = np.minimum(d_hand, d_finger)
    if i:
      creases.append(np.maximum(np.abs(d_finger) - 0.006, v - base_v - 0.05))
    nails.append(_ellipse(u, v, tip[0], tip[1] - 0.1 * radius, 0.6 * radius, 0.75 * radius))
  thumb_angle = rng.uniform(0.6, 1.2)  # from straight up, away from the palm
  thumb_len = rng.uniform(0.25, 0.35)
  t0 = (0.75 * palm_w, 0.35)
  t1 = (t0[0] + thumb_len * math.sin(thumb_angle), t0[1] - thumb_len * math.cos(thumb_angle))
  d_hand = np.minimum(d_hand, _capsule(u, v, t0, t1, radius * 1.15))
  p.paint(d_hand, skin, shade)
  p.recolour(np.minimum.reduce(creases), skin * 0.65, opacity=0.6)
  if rng.uniform() < 0.6:  # back of the hand: nails show
    p.recolour(np.minimum.reduce(nails), np.clip(skin * 1.1 + 0.08, 0, 1), opacity=0.8)
  return p.cutout()


def _random_colour(rng, dark=False):
  c = rng.uniform(0.03, 0.95, 3)
  return (c * (0.3 if dark else 1.0)).astype(np.float32)


def render_object(rng: np.random.Generator, size: int = 256,
                  shape: str | None = None) -> np.ndarray:
  """One object cut-out -> uint8 RGBA: 'microphone' (handle and mesh head), 'stick' (a
  cylinder, pens, brushes), 'blob' (a lumpy star-shaped solid), 'box' (phones, cards, books).

  Args:
    rng: the Generator every choice comes from.
    size: canvas side in pixels (the cut-out is cropped to the shape).
    shape: one of OBJECT_SHAPES; None draws one uniformly.
  """
  if shape is None:
    shape = OBJECT_SHAPES[int(rng.integers(len(OBJECT_SHAPES)))]
  u, v = _grid(size)
  p = _Painter(size)
  light = _light(rng, u, v, 0.15)
  if shape == 'microphone':
    r_head = rng.uniform(0.22, 0.32)
    r_handle = r_head * rng.uniform(0.3, 0.45)
    head_v = -0.97 + r_head
    handle = _capsule(u, v, (0.0, head_v), (0.0, 0.97 - r_handle), r_handle)
    cyl = np.sqrt(np.clip(1.0 - (u / r_handle) ** 2, 0.0, 1.0))
    p.paint(handle, _random_colour(rng, dark=rng.uniform() < 0.7), (0.6 + 0.4 * cyl) * light)
    rho = np.sqrt(u ** 2 + (v - head_v) ** 2)
    sphere = np.sqrt(np.clip(1.0 - (rho / r_head) ** 2, 0.0, 1.0))
    freq = rng.uniform(25.0, 45.0)
    mesh = 0.8 + 0.2 * np.cos(freq * u) * np.cos(freq * v)
    p.paint(rho - r_head, np.full(3, rng.uniform(0.45, 0.8), np.float32),
            (0.55 + 0.45 * sphere) * mesh * light)
  elif shape == 'stick':
    r = rng.uniform(0.04, 0.14)
    d = _capsule(u, v, (0.0, -0.97 + r), (0.0, 0.97 - r), r)
    cyl = np.sqrt(np.clip(1.0 - (u / r) ** 2, 0.0, 1.0))
    p.paint(d, _random_colour(rng), (0.6 + 0.4 * cyl) * light)
    if rng.uniform() < 0.5:  # a band of a second colour (a pencil's tip, a brush's ferrule)
      cut = rng.uniform(-0.6, 0.3)
      p.recolour(np.maximum(d, v - cut), _random_colour(rng), 0.6 + 0.4 * cyl)
  elif shape == 'blob':
    rho = np.sqrt(u ** 2 + v ** 2)
    theta = np.arctan2(v, u)
    r0 = rng.uniform(0.55, 0.7)
    r = np.ones_like(theta)
    for k in range(2, 6):
      r = r + rng.uniform(0.0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = r0 * r / (1.0 + sum(0.3 / k for k in range(2, 6)))  # stays inside the canvas
    body = np.sqrt(np.clip(1.0 - (rho / np.maximum(r, 1e-3)) ** 2, 0.0, 1.0))
    shade = (0.55 + 0.45 * body) * light
    if rng.uniform() < 0.4:  # stripes
      angle = rng.uniform(0, np.pi)
      shade = shade * (0.85 + 0.15 * np.sign(np.sin(rng.uniform(8, 20) * (
          np.cos(angle) * u + np.sin(angle) * v))))
    p.paint(rho - r, _random_colour(rng), shade)
  elif shape == 'box':
    a, b = rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)
    corner = rng.uniform(0.02, 0.6) * min(a, b)
    d = _round_box(u, v, a, b, corner)
    p.paint(d, _random_colour(rng, dark=rng.uniform() < 0.5), light)
    if rng.uniform() < 0.6:  # a screen or a label
      inset = rng.uniform(0.05, 0.12)
      p.recolour(_round_box(u, v, a - inset, b - 2 * inset, 0.5 * corner),
                 _random_colour(rng), light)
  else:
    raise ValueError(f'unknown object shape {shape!r}; expected one of {OBJECT_SHAPES}')
  return p.cutout()


def procedural_occluders(rng: np.random.Generator, num_hands: int = 32,
                         num_objects: int = 32, size: int = 256) -> OccluderSet:
  """The built-in occluder set: num_hands hands and num_objects objects (shapes cycling
  through OBJECT_SHAPES), rendered on size x size canvases."""
  hands = tuple(render_hand(rng, size) for _ in range(num_hands))
  objects = tuple(render_object(rng, size, OBJECT_SHAPES[i % len(OBJECT_SHAPES)])
                  for i in range(num_objects))
  return OccluderSet(hands, objects)


# ---------------------------------------------------------------------------------------------
# Pasting.


def _box_downsample(p: np.ndarray, f: int) -> np.ndarray:
  """Averages f x f blocks of p [h, w, C] (zero-padded to multiples of f)."""
  h, w, c = p.shape
  hp, wp = -(-h // f) * f, -(-w // f) * f
  p = np.pad(p, ((0, hp - h), (0, wp - w), (0, 0)))
  return p.reshape(hp // f, f, wp // f, f, c).mean(axis=(1, 3))


def paste_cutout(image: np.ndarray, cutout: np.ndarray, length: float, angle: float,
                 centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  """Pastes one cut-out: resized so its longer side is `length` px, rotated, centred.

  Resampling is bilinear on premultiplied RGBA (box-filtered first when shrinking by more
  than 2x), compositing "over" with the cut-out's alpha.

  Args:
    image: uint8 [H, W, 3].
    cutout: uint8 [h, w, 4] (straight alpha).
    length: the cut-out's longer side after resizing, in pixels.
    angle: rotation in degrees, counter-clockwise on screen.
    centre: (x, y) where the cut-out's centre lands, in pixels (may lie outside the image).

  Returns:
    (occluded uint8 [H, W, 3], mask bool [H, W]: pixels where the pasted alpha >= 0.5).
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'image must be uint8 [H, W, 3], got {image.dtype} {image.shape}')
  cutout = _check_cutout(cutout, 'cutout')
  hh, ww = image.shape[:2]
  out = image.copy()
  mask = np.zeros((hh, ww), bool)
  h, w = cutout.shape[:2]
  k = float(length) / max(h, w)  # output pixels per cut-out pixel
  if k <= 0:
    return out, mask
  src = cutout.astype(np.float32) / 255.0
  src[..., :3] *= src[..., 3:]
  src_cx, src_cy = (w - 1) / 2.0, (h - 1) / 2.0
  if k < 0.5:
    f = int(1.0 / k)
    src = _box_downsample(src, f)
    k *= f
    # Block j covers source pixels [j f, (j + 1) f): its centre is j f + (f - 1) / 2.
    src_cx, src_cy = (src_cx - (f - 1) / 2.0) / f, (src_cy - (f - 1) / 2.0) / f
  sh, sw = src.shape[:2]
  rad = math.radians(angle)
  c, s = math.cos(rad), math.sin(rad)
  cx, cy = float(centre[0]), float(centre[1])
  # Half extent of the rotated, scaled box (+2 px for the bilinear fringe).
  ex = k * (abs(c) * sw + abs(s) * sh) / 2.0 + 2.0
  ey = k * (abs(s) * sw + abs(c) * sh) / 2.0 + 2.0
  x0, x1 = max(0, int(math.floor(cx - ex))), min(ww, int(math.ceil(cx + ex)) + 1)
  y0, y1 = max(0, int(math.floor(cy - ey))), min(hh, int(math.ceil(cy + ey)) + 1)
  if x1 <= x0 or y1 <= y0:
    return out, mask
  ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
  dx, dy = (xs - cx) / k, (ys - cy) / k
  # Forward: screen = centre + k R (src - src_centre), R = [[c, s], [-s, c]] (y down, so a
  # positive angle turns the x axis towards -y: counter-clockwise); the inverse uses R^T.
  sx = c * dx - s * dy + src_cx
  sy = s * dx + c * dy + src_cy
  padded = np.pad(src, ((1, 1), (1, 1), (0, 0)))  # transparent border: bilinear fades out
  sx = np.clip(sx + 1.0, 0.0, sw + 1.0)
  sy = np.clip(sy + 1.0, 0.0, sh + 1.0)
  ix, iy = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
  fx, fy = (sx - ix)[..., None], (sy - iy)[..., None]
  ix1, iy1 = np.minimum(ix + 1, sw + 1), np.minimum(iy + 1, sh + 1)
  sample = ((padded[iy, ix] * (1 - fx) + padded[iy, ix1] * fx) * (1 - fy)
            + (padded[iy1, ix] * (1 - fx) + padded[iy1, ix1] * fx) * fy)
  alpha = np.clip(sample[..., 3:], 0.0, 1.0)
  region = out[y0:y1, x0:x1].astype(np.float32)
  region = sample[..., :3] * 255.0 + (1.0 - alpha) * region
  out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
  mask[y0:y1, x0:x1] = alpha[..., 0] >= 0.5
  return out, mask


def _face_box_pixels(shape, face_box):
  hh, ww = shape[:2]
  bx0, by0, bx1, by1 = (float(b) for b in face_box)
  if not (0.0 <= bx0 < bx1 <= 1.0 and 0.0 <= by0 < by1 <= 1.0):
    raise ValueError(f'face_box {face_box}: expected fractions 0 <= x0 < x1 <= 1, '
                     f'0 <= y0 < y1 <= 1')
  return bx0 * ww, by0 * hh, bx1 * ww, by1 * hh


def paste_occluder(image: np.ndarray, rng: np.random.Generator,
                   cutouts: Sequence[np.ndarray], scale: Sequence[float] = PAPER_SCALE,
                   max_rotation: float = PAPER_MAX_ROTATION,
                   face_box: Sequence[float] = ALIGNED_FACE_BOX
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Pastes a random cut-out of `cutouts` at a random size, rotation and position.

  The cut-out's longer side becomes U(scale) x the face size (the longer side of the face
  box), it turns by U(-max_rotation, max_rotation) degrees and its centre lands uniformly
  inside the face box.

  Args:
    image: uint8 [H, W, 3] face image.
    rng: numpy Generator (the only source of randomness).
    cutouts: non-empty sequence of uint8 RGBA [h, w, 4] cut-outs.
    scale: (low, high) occluder length over face size.
    max_rotation: degrees.
    face_box: (x0, y0, x1, y1) fractions of the image (default: FFHQ-aligned crops).

  Returns:
    (occluded uint8 [H, W, 3], occluder mask bool [H, W]).
  """
  if not len(cutouts):
    raise ValueError('paste_occluder needs at least one cut-out')
  lo, hi = float(scale[0]), float(scale[1])
  if not 0.0 < lo <= hi:
    raise ValueError(f'scale {tuple(scale)}: expected 0 < low <= high')
  x0, y0, x1, y1 = _face_box_pixels(np.shape(image), face_box)
  cutout = cutouts[int(rng.integers(len(cutouts)))]
  length = rng.uniform(lo, hi) * max(x1 - x0, y1 - y0)
  angle = rng.uniform(-max_rotation, max_rotation)
  centre = (rng.uniform(x0, x1) - 0.5, rng.uniform(y0, y1) - 0.5)  # pixel centres at ints
  return paste_cutout(image, cutout, length, angle, centre)


# ---------------------------------------------------------------------------------------------
# The mix and training pairs.


def sample_mix(rng: np.random.Generator, mix: Sequence[float] = PAPER_MIX) -> str:
  """Draws one of MIX_KINDS ('none', 'hand', 'object', 'both') with probabilities `mix`."""
  p = np.asarray(mix, np.float64)
  if p.shape != (len(MIX_KINDS),) or np.any(p < 0) or not np.isclose(p.sum(), 1.0):
    raise ValueError(f'mix {tuple(mix)}: expected {len(MIX_KINDS)} probabilities of '
                     f'{MIX_KINDS} summing to 1')
  return MIX_KINDS[int(rng.choice(len(MIX_KINDS), p=p))]


def occlude(image: np.ndarray, rng: np.random.Generator, occluders: OccluderSet,
            mix: Sequence[float] = PAPER_MIX, scale: Sequence[float] = PAPER_SCALE,
            max_rotation: float = PAPER_MAX_ROTATION,
            face_box: Sequence[float] = ALIGNED_FACE_BOX
            ) -> tuple[np.ndarray, np.ndarray, str]:
  """Occludes a face per the mix: nothing, a hand, an object, or an object then a hand.

  Args:
    image: uint8 [H, W, 3].
    rng, occluders: the Generator and the cut-outs.
    mix, scale, max_rotation, face_box: as in sample_mix and paste_occluder.

  Returns:
    (uint8 [H, W, 3], mask bool [H, W] (union of the pasted occluders), kind in MIX_KINDS).
  """
  kind = sample_mix(rng, mix)
  out = np.array(image, np.uint8, copy=True)
  mask = np.zeros(out.shape[:2], bool)
  groups = {'none': (), 'hand': (HAND,), 'object': (OBJECT,), 'both': (OBJECT, HAND)}[kind]
  for group in groups:
    out, m = paste_occluder(out, rng, occluders.group(group), scale, max_rotation, face_box)
    mask |= m
  return out, mask, kind


class OccludedPair(NamedTuple):
  """One HEAR-Net training pair (uint8 [H, W, 3] images)."""
  x_s: np.ndarray  # the source, never occluded
  x_t: np.ndarray  # the (occluded) target
  same: bool  # X_t is an occluded copy of X_s (L_rec' applies)
  mask: np.ndarray  # bool [H, W]: occluder pixels of x_t
  kind: str  # MIX_KINDS entry used for x_t


def occluded_pair(source: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                  occluders: OccluderSet, same_identity_ratio: float = 0.5,
                  **occlude_kwargs) -> OccludedPair:
  """A training pair: with probability same_identity_ratio X_t = occlude(X_s) (same
  identity: it teaches HEAR-Net to keep occlusions), else X_t = occlude(target).

  The mix applies to both kinds of pairs, so a 'none' draw on a same-identity pair gives
  X_t == X_s (a plain reconstruction pair).

  Args:
    source: uint8 [H, W, 3] X_s.
    target: uint8 [H, W, 3] another face (of another identity), used when not same.
    rng, occluders: the Generator and the cut-outs.
    same_identity_ratio: probability of a same-identity pair.
    **occlude_kwargs: mix, scale, max_rotation, face_box (see `occlude`).
  """
  if not 0.0 <= same_identity_ratio <= 1.0:
    raise ValueError(f'same_identity_ratio {same_identity_ratio}: expected a probability')
  source = np.asarray(source, np.uint8)
  same = bool(rng.uniform() < same_identity_ratio)
  x_t, mask, kind = occlude(source if same else target, rng, occluders, **occlude_kwargs)
  return OccludedPair(source, x_t, same, mask, kind)
