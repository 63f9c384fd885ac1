"""Procedural 2.5-D face renderer in numpy: identity and attribute parameters -> RGB image.

A face is drawn from two independent parameter vectors:

* identity (`IDENTITY_FIELDS`, `sample_identity`): the inner face: face outline, jaw, skin
  tone, eyes, iris colour, brows (shape and colour), nose, lips, ears, beard and up to two marks;
* attributes (`ATTRIBUTE_FIELDS`, `sample_attributes`): everything FaceShifter keeps from the
  target: head yaw/pitch/roll, expression (mouth open, smile, blink, gaze), lighting,
  background, clothes, scale/position jitter, an optional occluder (glasses or a hand) and,
  since dataset version 2.0.0, the scalp hair (colour, hairline, volume, length, parting) and
  the neck width (`MOVED_TO_ATTRIBUTES_V2`); since 3.0.0 a ground-truth swap also lays the
  hair out on the target's head (`pair_records`), so the hair's geometry is the target's too.

Facial features sit on an ellipsoidal head: pose rotates them in 3-D, so they shift, turn and
foreshorten while the outline stays put (2.5-D). Every shape is a signed distance field turned
into coverage with a one-pixel linear edge (analytic anti-aliasing), evaluated on a batch of
images at once and only inside each feature's bounding window. Framing follows the FFHQ
alignment (eyes near y = 0.47 H, about 0.25 W apart, mouth near 0.7 H), so the identity crop
for these images is a plain resize (`identity.crop_mode = 'resize'`).

All image-space geometry uses normalised coordinates in [-1, 1] (x right, y down); head-space
lengths are in the same units at scale 1.
"""

from typing import Mapping, Sequence

import numpy as np

IDENTITY_FIELDS = (
    'face_width', 'face_height', 'jaw_taper', 'chin_power', 'face_depth',
    'skin_r', 'skin_g', 'skin_b',
    'eye_size', 'eye_spacing', 'eye_height', 'eye_aspect', 'eye_tilt',
    'iris_r', 'iris_g', 'iris_b', 'iris_size',
    'brow_thickness', 'brow_angle', 'brow_height', 'brow_length', 'brow_arch',
    'nose_length', 'nose_width', 'nose_flare',
    'mouth_gap', 'lip_width', 'lip_upper', 'lip_lower', 'lip_r', 'lip_g', 'lip_b',
    'brow_r', 'brow_g', 'brow_b',
    'ear_size', 'beard',
    'mark1_x', 'mark1_y', 'mark1_size', 'mark2_x', 'mark2_y', 'mark2_size', 'mark2_angle',
)

ATTRIBUTE_FIELDS = (
    'yaw', 'pitch', 'roll',
    'mouth_open', 'smile', 'blink', 'gaze_x', 'gaze_y', 'brow_raise',
    'light_x', 'light_y', 'light_strength', 'light_warmth',
    'bg_r', 'bg_g', 'bg_b', 'bg2_r', 'bg2_g', 'bg2_b',
    'bg_freq', 'bg_angle', 'bg_phase', 'bg_pattern', 'bg_gradient',
    'cloth_r', 'cloth_g', 'cloth_b',
    'scale', 'shift_x', 'shift_y',
    'occluder', 'occ_r', 'occ_g', 'occ_b', 'occ_x', 'occ_y', 'occ_size', 'occ_angle',
    # Dataset 2.0.0: the hair and the neck belong to the target, as in FaceShifter / FF++,
    # where only the inner face is swapped (appended, so the fields above keep their index).
    'hair_r', 'hair_g', 'hair_b', 'hairline', 'hair_volume', 'hair_length', 'hair_part',
    'neck_width',
)
# Fields that version 1.0.0 of the dataset drew with the identity (now attributes).
MOVED_TO_ATTRIBUTES_V2 = ('hair_r', 'hair_g', 'hair_b', 'hairline', 'hair_volume',
                          'hair_length', 'hair_part', 'neck_width')

IDENTITY_DIM = len(IDENTITY_FIELDS)
# Identity fields whose sign a horizontal flip of the image reverses (the marks' side and
# tilt; the eyes and brows are drawn mirrored, so their tilt and angle are flip-invariant).
MIRRORED_IDENTITY_FIELDS = ('mark1_x', 'mark2_x', 'mark2_angle')
ATTRIBUTE_DIM = len(ATTRIBUTE_FIELDS)
POSE_FIELDS = ('yaw', 'pitch', 'roll', 'scale', 'shift_x', 'shift_y')
OCCLUDER_NONE, OCCLUDER_GLASSES, OCCLUDER_HAND = 0, 1, 2

_HAIR_PALETTE = np.array([
    (0.05, 0.04, 0.04), (0.16, 0.10, 0.07), (0.34, 0.21, 0.12), (0.55, 0.38, 0.22),
    (0.86, 0.72, 0.44), (0.62, 0.24, 0.10), (0.58, 0.58, 0.60), (0.90, 0.89, 0.86),
], np.float32)
_IRIS_PALETTE = np.array([
    (0.16, 0.09, 0.05), (0.36, 0.21, 0.10), (0.26, 0.48, 0.78), (0.28, 0.52, 0.30),
    (0.50, 0.56, 0.62), (0.52, 0.42, 0.18), (0.72, 0.50, 0.12),
], np.float32)
_SMILE_BEND = 0.07  # mouth-corner lift at smile = 1 (head units)
_SKIN_DARK = np.array((0.28, 0.17, 0.11), np.float32)
_SKIN_LIGHT = np.array((0.99, 0.85, 0.75), np.float32)


# ---------------------------------------------------------------------------------------------
# Parameters.


def identity_to_dict(identity: np.ndarray) -> dict[str, float]:
  """Names the entries of an identity vector [IDENTITY_DIM]."""
  return {k: float(v) for k, v in zip(IDENTITY_FIELDS, np.asarray(identity).reshape(-1))}


def attributes_to_dict(attributes: np.ndarray) -> dict[str, float]:
  """Names the entries of an attribute vector [ATTRIBUTE_DIM]."""
  return {k: float(v) for k, v in zip(ATTRIBUTE_FIELDS, np.asarray(attributes).reshape(-1))}


def identity_from_dict(values: Mapping[str, float]) -> np.ndarray:
  """Identity vector [IDENTITY_DIM] float32 from a complete {field: value} mapping."""
  return np.array([values[k] for k in IDENTITY_FIELDS], np.float32)


def attributes_from_dict(values: Mapping[str, float]) -> np.ndarray:
  """Attribute vector [ATTRIBUTE_DIM] float32 from a complete {field: value} mapping."""
  return np.array([values[k] for k in ATTRIBUTE_FIELDS], np.float32)


def replace_fields(vector: np.ndarray, fields: Sequence[str], **changes) -> np.ndarray:
  """Returns a copy of an identity or attribute vector with named entries replaced."""
  out = np.array(vector, np.float32, copy=True)
  for name, value in changes.items():
    out[..., fields.index(name)] = value
  return out


def _jitter_colour(rng, colour, amount):
  return np.clip(colour * rng.uniform(1 - amount, 1 + amount, 3), 0.02, 0.98)


def sample_identity(rng: np.random.Generator) -> np.ndarray:
  """Draws one identity: float32 [IDENTITY_DIM] (see IDENTITY_FIELDS), deterministic in rng."""
  u = rng.uniform
  p = {}
  p['face_width'] = u(0.52, 0.66)
  p['face_height'] = u(0.74, 0.88)
  p['jaw_taper'] = u(0.0, 0.5)
  p['chin_power'] = u(1.0, 3.5)
  p['face_depth'] = u(0.75, 1.0)
  tone = u(0.0, 1.0) ** 0.8
  skin = _SKIN_DARK + tone * (_SKIN_LIGHT - _SKIN_DARK)
  skin = skin * np.array([u(0.95, 1.05), u(0.93, 1.04), u(0.88, 1.1)], np.float32)
  p['skin_r'], p['skin_g'], p['skin_b'] = np.clip(skin, 0.05, 1.0)
  p['eye_size'] = u(0.075, 0.11)
  p['eye_spacing'] = u(0.21, 0.29)
  p['eye_height'] = u(-0.10, 0.0)
  p['eye_aspect'] = u(0.32, 0.68)
  p['eye_tilt'] = u(-0.28, 0.28)
  iris = _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))]
  p['iris_r'], p['iris_g'], p['iris_b'] = _jitter_colour(rng, iris, 0.25)
  p['iris_size'] = u(0.42, 0.72)
  p['brow_thickness'] = u(0.010, 0.038)
  p['brow_angle'] = u(-0.35, 0.35)
  p['brow_height'] = u(0.07, 0.14)
  p['brow_length'] = u(0.8, 1.5)
  p['brow_arch'] = u(-0.3, 1.0)
  p['nose_length'] = u(0.2, 0.32)
  p['nose_width'] = u(0.045, 0.11)
  p['nose_flare'] = u(0.6, 1.4)
  p['mouth_gap'] = u(0.11, 0.19)
  p['lip_width'] = u(0.13, 0.24)
  p['lip_upper'] = u(0.012, 0.04)
  p['lip_lower'] = u(0.016, 0.055)
  lip = skin + u(0.25, 0.75) * (np.array((0.72, 0.25, 0.28), np.float32) - skin)
  p['lip_r'], p['lip_g'], p['lip_b'] = _jitter_colour(rng, lip * u(0.75, 1.0), 0.1)
  # Brows and beard (inner face) keep the identity's natural hair colour; the scalp hair
  # itself is an attribute (of the target) since 2.0.0.
  brow = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))]
  p['brow_r'], p['brow_g'], p['brow_b'] = _jitter_colour(rng, brow, 0.15)
  p['ear_size'] = u(0.09, 0.15)
  p['beard'] = u(0.3, 1.0) if rng.uniform() < 0.25 else 0.0
  has_mole = rng.uniform() < 0.7
  p['mark1_x'] = u(-0.38, 0.38)
  p['mark1_y'] = u(-0.15, 0.55)
  p['mark1_size'] = u(0.012, 0.028) if has_mole else 0.0
  has_mark = rng.uniform() < 0.5
  p['mark2_x'] = u(-0.38, 0.38)
  p['mark2_y'] = u(-0.45, 0.5)
  p['mark2_size'] = u(0.03, 0.07) if has_mark else 0.0
  p['mark2_angle'] = u(-np.pi / 2, np.pi / 2)
  return identity_from_dict(p)


def identity_statistics(num: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation float32 [IDENTITY_DIM] of `sample_identity`'s draws.

  Estimated from `num` identities of a fixed generator (deterministic); the datasets draw
  their identities from the same distribution. Used to standardise identity parameters as
  regression targets (fsjax.identity, `loss.identity_params`).
  """
  rng = np.random.default_rng(seed)
  draws = np.stack([sample_identity(rng) for _ in range(num)])
  return draws.mean(0).astype(np.float32), draws.std(0).astype(np.float32)


def _sample_skin(rng):
  tone = rng.uniform(0.0, 1.0) ** 0.8
  return _SKIN_DARK + tone * (_SKIN_LIGHT - _SKIN_DARK)


def sample_attributes(rng: np.random.Generator) -> np.ndarray:
  """Draws one pose/expression/scene: float32 [ATTRIBUTE_DIM] (see ATTRIBUTE_FIELDS)."""
  u = rng.uniform
  p = {}
  p['yaw'] = u(-0.6, 0.6)
  p['pitch'] = u(-0.3, 0.3)
  p['roll'] = u(-0.25, 0.25)
  p['mouth_open'] = 0.0 if rng.uniform() < 0.55 else u(0.1, 1.0)
  p['smile'] = u(-0.4, 1.0)
  p['blink'] = u(0.4, 1.0) if rng.uniform() < 0.15 else 0.0
  p['gaze_x'] = u(-1.0, 1.0)
  p['gaze_y'] = u(-1.0, 1.0)
  p['brow_raise'] = u(-0.02, 0.04)
  angle = u(0, 2 * np.pi)
  radius = u(0.0, 0.95)
  p['light_x'], p['light_y'] = radius * np.cos(angle), radius * np.sin(angle)
  p['light_strength'] = u(0.0, 0.7)
  p['light_warmth'] = u(-1.0, 1.0)
  p['bg_r'], p['bg_g'], p['bg_b'] = rng.uniform(0.03, 0.97, 3)
  p['bg2_r'], p['bg2_g'], p['bg2_b'] = rng.uniform(0.03, 0.97, 3)
  p['bg_freq'] = u(0.5, 6.0)
  p['bg_angle'] = u(0, np.pi)
  p['bg_phase'] = u(0, 2 * np.pi)
  p['bg_pattern'] = u(0.0, 1.0) if rng.uniform() < 0.6 else 0.0
  p['bg_gradient'] = u(-0.4, 0.4)
  p['cloth_r'], p['cloth_g'], p['cloth_b'] = rng.uniform(0.03, 0.95, 3)
  p['scale'] = u(0.9, 1.08)
  p['shift_x'] = u(-0.05, 0.05)
  p['shift_y'] = u(-0.05, 0.05)
  p.update(sample_occluder(rng, rng.choice(3, p=(0.7, 0.15, 0.15))))
  if rng.uniform() < 0.1:  # dyed hair
    hair = rng.uniform(0.05, 0.95, 3).astype(np.float32)
  else:
    hair = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))]
  p['hair_r'], p['hair_g'], p['hair_b'] = _jitter_colour(rng, hair, 0.15)
  bald = rng.uniform() < 0.12
  p['hairline'] = u(-1.05, -0.85) if bald else u(-0.80, -0.30)
  p['hair_volume'] = u(-0.12, 0.0) if bald else u(0.0, 0.28)
  p['hair_length'] = 0.0 if bald else u(0.0, 1.0) ** 1.5
  p['hair_part'] = u(-1.0, 1.0)
  p['neck_width'] = u(0.17, 0.27)
  return attributes_from_dict(p)


def draws_occluder(attribute_params: np.ndarray) -> bool:
  """Whether an attribute vector float32 [ATTRIBUTE_DIM] draws an occluder (glasses, hand)."""
  kind = round(float(np.asarray(attribute_params)[ATTRIBUTE_FIELDS.index('occluder')]))
  return kind != OCCLUDER_NONE


def sample_occluder(rng: np.random.Generator, kind: int) -> dict[str, float]:
  """The occluder fields of ATTRIBUTE_FIELDS for an occluder of `kind` (OCCLUDER_*): colour
  (skin for a hand), position, size and angle, drawn from rng."""
  u = rng.uniform
  p = {'occluder': float(kind)}
  if kind == OCCLUDER_HAND:
    occ = _sample_skin(rng)
  else:
    occ = rng.uniform(0.02, 0.6, 3) * (1.0 if rng.uniform() < 0.5 else 0.3)
  p['occ_r'], p['occ_g'], p['occ_b'] = occ
  p['occ_x'] = u(-0.45, 0.45)
  p['occ_y'] = u(0.15, 0.6)
  p['occ_size'] = u(0.0, 1.0)
  p['occ_angle'] = u(-0.8, 0.8)
  return p


# ---------------------------------------------------------------------------------------------
# Geometry helpers.


def _col(x):
  """[B] -> [B, 1, 1] for broadcasting against [B, h, w] maps."""
  return x[:, None, None]


def _rot2(angle):
  """Rotation matrices [B, 2, 2] (counter-clockwise on screen for angle < 0, y down)."""
  c, s = np.cos(angle), np.sin(angle)
  return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _normalise(v):
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


class _Frame:
  """An affine frame: image point q -> local (u, v) = m @ (q - origin); k = pixels per unit."""

  def __init__(self, origin, local_to_image, size, local_transform=None):
    a = local_to_image.astype(np.float32)
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    det = np.where(np.abs(det) < 1e-6, 1e-6, det)
    inv = np.stack([np.stack([a[:, 1, 1], -a[:, 0, 1]], -1),
                    np.stack([-a[:, 1, 0], a[:, 0, 0]], -1)], -2) / det[:, None, None]
    if local_transform is not None:
      inv = np.einsum('bij,bjk->bik', local_transform, inv)
    self.origin = origin.astype(np.float32)
    self.m = inv.astype(np.float32)
    self.k = _col((0.5 * size * np.sqrt(np.abs(det))).astype(np.float32))

  def local(self, canvas, win):
    y0, y1, x0, x1 = win
    x = canvas.coords[x0:x1][None, None, :] - _col(self.origin[:, 0])
    y = canvas.coords[y0:y1][None, :, None] - _col(self.origin[:, 1])
    m = self.m
    u = _col(m[:, 0, 0]) * x + _col(m[:, 0, 1]) * y
    v = _col(m[:, 1, 0]) * x + _col(m[:, 1, 1]) * y
    return u, v


class _Canvas:
  """A batch of float images, stored as channel planes [3, B, S, S] in [0, 1], plus windowed
  compositing (planar storage keeps numpy's inner loops long)."""

  def __init__(self, planes):
    self.planes = planes
    self.size = planes.shape[-1]
    self.coords = ((np.arange(self.size, dtype=np.float32) + 0.5) * (2.0 / self.size) - 1.0)

  def window(self, centre, radius):
    """Union over the batch of the pixel boxes centre +- radius (image units); None if empty."""
    half = 0.5 * self.size
    lo = np.min(centre - radius[:, None], axis=0)
    hi = np.max(centre + radius[:, None], axis=0)
    pad = 3  # pixels: covers the widest soft edge (4 px transition) of any layer
    x0, y0 = np.clip(np.floor((lo + 1.0) * half).astype(int) - pad, 0, self.size)
    x1, y1 = np.clip(np.ceil((hi + 1.0) * half).astype(int) + pad, 0, self.size)
    if x1 <= x0 or y1 <= y0:
      return None
    return int(y0), int(y1), int(x0), int(x1)

  def full(self):
    return 0, self.size, 0, self.size

  def paint(self, win, alpha, colour, factor=None):
    """Composites colour [B, 3] (times an optional per-pixel factor [B, h, w]) with coverage
    alpha [B, h, w] in [0, 1] into the window."""
    y0, y1, x0, x1 = win
    colour = np.asarray(colour, np.float32)
    for c in range(3):
      region = self.planes[c, :, y0:y1, x0:x1]
      target = _col(colour[:, c]) if factor is None else _col(colour[:, c]) * factor
      region += alpha * (target - region)

  def multiply(self, factor, win=None):
    """Multiplies all channels by factor [B, h, w] inside the window (default: everywhere)."""
    y0, y1, x0, x1 = win or self.full()
    self.planes[:, :, y0:y1, x0:x1] *= factor[None]


def _coverage(d, k):
  """Signed distance d (local units, < 0 inside) -> coverage with a 1-pixel linear edge."""
  return np.clip(0.5 - d * k, 0.0, 1.0)


def _ellipse_sdf(u, v, a, b):
  """Approximate signed distance to an axis-aligned ellipse with semi-axes a, b."""
  k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
  k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
  return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _lens_sdf(u, v, w, h):
  """Signed distance to an almond (intersection of two circles) of half-width w, half-height h."""
  r = (w * w + h * h) / (2 * h)
  off = r - h
  d1 = np.sqrt(u * u + (v - off) ** 2)
  d2 = np.sqrt(u * u + (v + off) ** 2)
  return np.maximum(d1, d2) - r


def _capsule_sdf(u, v, half_length, radius):
  """Signed distance to a vertical capsule centred at 0 (segment +-half_length along v)."""
  vv = np.clip(v, -half_length, half_length)
  return np.sqrt(u * u + (v - vv) ** 2) - radius


def _rotation_3d(yaw, pitch, roll):
  """Head rotations [B, 3, 3] = Rz(roll) Rx(pitch) Ry(yaw) (x right, y down, z to viewer)."""
  cy, sy = np.cos(yaw), np.sin(yaw)
  cp, sp = np.cos(pitch), np.sin(pitch)
  cr, sr = np.cos(roll), np.sin(roll)
  one, zero = np.ones_like(yaw), np.zeros_like(yaw)
  ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                 np.stack([-sy, zero, cy], -1)], -2)
  rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, sp], -1),
                 np.stack([zero, -sp, cp], -1)], -2)
  rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1),
                 np.stack([zero, zero, one], -1)], -2)
  return rz @ rx @ ry


class _Head:
  """Pose of an ellipsoidal head: projects head-space points and surface frames to the image."""

  def __init__(self, ip, ap, size):
    self.size = size
    self.a = ip['face_width']
    self.b = ip['face_height']
    self.d = ip['face_depth'] * self.a
    self.rot = _rotation_3d(ap['yaw'], ap['pitch'], ap['roll']).astype(np.float32)
    self.scale = ap['scale']
    self.centre = np.stack([ap['shift_x'], -0.02 + ap['shift_y']], -1)

  def surface_z(self, x, y):
    t = 1.0 - (x / self.a) ** 2 - (y / self.b) ** 2
    return self.d * np.sqrt(np.clip(t, 0.03, 1.0))

  def project(self, x, y, z):
    """Head-space points ([B] each) -> image points [B, 2] and view depth [B]."""
    p = np.stack([x, y, z], -1)
    q = np.einsum('bij,bj->bi', self.rot, p)
    return self.centre + self.scale[:, None] * q[:, :2], q[:, 2]

  def surface_frame(self, x, y, lift=0.0, local_transform=None):
    """Frame of the tangent plane at head-surface point (x, y) raised by lift along z.

    Returns (_Frame, visibility [B] in [0, 1] from the rotated surface normal).
    """
    z = self.surface_z(x, y) + lift
    zs = self.surface_z(x, y)
    n = _normalise(np.stack([x / self.a ** 2, y / self.b ** 2, zs / self.d ** 2], -1))
    ex = np.broadcast_to(np.array([1.0, 0.0, 0.0], np.float32), n.shape)
    ey = np.broadcast_to(np.array([0.0, 1.0, 0.0], np.float32), n.shape)
    tu = _normalise(ex - np.sum(ex * n, -1, keepdims=True) * n)
    tv = ey - np.sum(ey * n, -1, keepdims=True) * n
    tv = _normalise(tv - np.sum(tv * tu, -1, keepdims=True) * tu)
    rtu = np.einsum('bij,bj->bi', self.rot, tu)
    rtv = np.einsum('bij,bj->bi', self.rot, tv)
    rn = np.einsum('bij,bj->bi', self.rot, n)
    a = self.scale[:, None, None] * np.stack([rtu[:, :2], rtv[:, :2]], -1)
    origin, _ = self.project(x, y, z)
    vis = np.clip((rn[:, 2] - 0.05) * 5.0, 0.0, 1.0)
    return _Frame(origin, a, self.size, local_transform), vis


def _mirror_rotate(sign, angle):
  """Local transforms [B, 2, 2]: rotate by angle then mirror u by sign."""
  r = _rot2(angle)
  r[:, 0, :] *= sign[:, None]
  return r


# ---------------------------------------------------------------------------------------------
# Rendering.


def _fields(batch, names):
  batch = np.asarray(batch, np.float32)
  if batch.ndim != 2 or batch.shape[1] != len(names):
    raise ValueError(f'expected [B, {len(names)}] parameters, got {batch.shape}')
  return {name: batch[:, i] for i, name in enumerate(names)}


def _background(ap, coords, size):
  """Background planes [3, B, S, S]: two colours mixed by a wave pattern, with a gradient."""
  x = coords[None, None, :]
  y = coords[None, :, None]
  proj = _col(np.cos(ap['bg_angle'])) * x + _col(np.sin(ap['bg_angle'])) * y
  wave = 0.5 + 0.5 * np.sin(_col(ap['bg_freq'] * np.pi) * proj + _col(ap['bg_phase']))
  mix = _col(ap['bg_pattern']) * wave  # [B, S, S]
  gradient = 1.0 + _col(ap['bg_gradient']) * y
  planes = np.empty((3,) + mix.shape, np.float32)
  for c, ch in enumerate('rgb'):
    c1, c2 = _col(ap['bg_' + ch]), _col(ap['bg2_' + ch])
    planes[c] = (c1 + mix * (c2 - c1)) * gradient
  return planes


def _rgb(p, prefix):
  return np.stack([p[prefix + '_r'], p[prefix + '_g'], p[prefix + '_b']], -1)


def _const(colour, batch):
  """A constant colour for every image: [B, 3] float32."""
  return np.broadcast_to(np.asarray(colour, np.float32), (batch, 3))


class _Scene:
  """One batch being rendered: parameters, head pose, canvas and the masks layers share."""

  def __init__(self, identity, attributes, size, hair_identity=None):
    self.ip = _fields(identity, IDENTITY_FIELDS)
    self.ap = _fields(attributes, ATTRIBUTE_FIELDS)
    self.size = size
    self.batch = identity.shape[0]
    self.one = np.ones(self.batch, np.float32)
    coords = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    self.canvas = _Canvas(_background(self.ap, coords, size))
    self.head = _Head(self.ip, self.ap, size)
    # The head the scalp hair is laid out on (its outline frame): the face's own, or another
    # identity's (`render_batch(hair_identity=...)`).
    self.hair_head = self.head if hair_identity is None else _Head(
        _fields(hair_identity, IDENTITY_FIELDS), self.ap, size)
    self.skin = _rgb(self.ip, 'skin')
    self.hair = _rgb(self.ap, 'hair')  # scalp hair: the target's (attributes)
    self.brow = _rgb(self.ip, 'brow')  # brows and beard: the identity's
    self.nose_tip_y = self.ip['eye_height'] + self.ip['nose_length']
    self.eye_centres = []
    self.occluder_alpha = np.zeros((self.batch, size, size), np.float32)

  def _occlude(self, win, alpha):
    """Adds coverage alpha [B, h, w] to the occluder mask inside the window (union)."""
    y0, y1, x0, x1 = win
    region = self.occluder_alpha[:, y0:y1, x0:x1]
    region += alpha * (1.0 - region)

  def draw_clothes(self):
    s, canvas = self.head.scale, self.canvas
    cx = self.head.centre[:, 0] * 0.6
    win = canvas.window(np.stack([cx, 1.2 * self.one], -1), self.one)
    if win:
      f = _Frame(np.stack([cx, 1.2 + 0.5 * (s - 1.0)], -1),
                 np.eye(2, dtype=np.float32)[None] * s[:, None, None], self.size)
      u, v = f.local(canvas, win)
      canvas.paint(win, _coverage(_ellipse_sdf(u, v, 0.95, 0.48), f.k),
                   _rgb(self.ap, 'cloth') * (0.9 - 0.1 * self.ap['light_y'])[:, None])

  def _outline(self, head, win):
    """A head's outline frame (its ellipsoid's silhouette, foreshortened by yaw and pitch,
    rolled in the image): local (u, v) over win in units of the semi-axes, their edge width
    and the vertical semi-axis wy."""
    yaw, pitch, roll = self.ap['yaw'], self.ap['pitch'], self.ap['roll']
    wx = np.sqrt((head.a * np.cos(yaw)) ** 2 + (head.d * np.sin(yaw)) ** 2)
    wy = np.sqrt((head.b * np.cos(pitch)) ** 2 + (head.d * np.sin(pitch)) ** 2)
    outline = _Frame(head.centre, _rot2(roll) * np.stack([wx, wy], -1)[:, None, :] *
                     head.scale[:, None, None], self.size)
    u, v = outline.local(self.canvas, win)
    return u, v, outline.k * _col(np.minimum(wx, wy)) / _col(np.maximum(wx, wy)), wy

  def draw_head(self):
    """Back hair, neck, ears, face, beard and front hair, then the head's diffuse lighting,
    in the head's outline frame (`_outline`); the back and front hair in hair_head's."""
    ip, ap, head, canvas = self.ip, self.ap, self.head, self.canvas
    s, one, skin, hair = head.scale, self.one, self.skin, self.hair
    yaw, roll = ap['yaw'], ap['roll']
    full = canvas.full()
    u_all, v_all, kk, wy = self._outline(head, full)
    # Scalp hair coordinates: the same frame unless the hair sits on another head.
    u_h, v_h, kk_h = (u_all, v_all, kk) if self.hair_head is head else (
        self._outline(self.hair_head, full)[:3])

    # Back hair (behind the head): crown + a hanging part for long hair.
    vol = ap['hair_volume']
    back_r = _col(1.0 + vol)
    d_back = np.maximum(np.sqrt(u_h ** 2 + (v_h + 0.04) ** 2) - back_r, v_h - 0.15)
    hang = 0.25 + 1.7 * _col(ap['hair_length'])
    d_hang = np.maximum(np.abs(u_h) - back_r * 0.98,
                        np.abs(v_h - (hang - 0.2) * 0.5) - (hang + 0.2) * 0.5)
    d_back = np.minimum(d_back, np.where(_col(ap['hair_length']) > 0.02, d_hang, 10.0))
    back_alpha = _coverage(d_back, kk_h)
    canvas.paint(full, back_alpha, hair * 0.8)

    # Neck.
    neck_top, _ = head.project(0 * one, 0.55 * head.b, -0.35 * head.d)
    win = canvas.window(neck_top + np.stack([0 * one, 0.5 * one], -1),
                        np.maximum(ap['neck_width'] * s, 0.55) + 0.05)
    if win:
      f = _Frame(neck_top, np.eye(2, dtype=np.float32)[None] * s[:, None, None], self.size)
      u, v = f.local(canvas, win)
      d = np.maximum(np.maximum(np.abs(u) - _col(ap['neck_width']), -v), v - 1.0 / _col(s))
      canvas.paint(win, _coverage(d, f.k), skin * 0.78)

    # Ears, behind the face outline so only their outer part shows.
    for sign in (-1.0, 1.0):
      centre, _ = head.project(sign * head.a * 0.96, (ip['eye_height'] + 0.1) * one,
                               -0.08 * head.d * one)
      win = canvas.window(centre, ip['ear_size'] * s * 1.1 + 0.02)
      if not win:
        continue
      f = _Frame(centre, _rot2(roll) * s[:, None, None], self.size)
      u, v = f.local(canvas, win)
      ear_h = _col(ip['ear_size'])
      ear_w = ear_h * 0.55
      canvas.paint(win, _coverage(_ellipse_sdf(u, v, ear_w, ear_h), f.k), skin * 0.9)
      canvas.paint(win, 0.6 * _coverage(_ellipse_sdf(u + sign * 0.2 * ear_w, v, 0.45 * ear_w,
                                                     0.6 * ear_h), f.k), skin * 0.66)

    # Face: tapered jaw, chin turning with yaw.
    u_chin = u_all - 0.22 * _col(np.sin(yaw)) * np.clip(v_all, 0.0, 1.0)
    half_width = 1.0 - _col(ip['jaw_taper']) * np.clip(v_all, 0.0, 1.0) ** _col(ip['chin_power'])
    self.face_alpha = _coverage(np.sqrt((u_chin / half_width) ** 2 + v_all ** 2) - 1.0, kk)
    canvas.paint(full, self.face_alpha, skin)

    # Beard / stubble: lower face below the nose.
    if np.any(ip['beard'] > 0):
      v_beard = _col((self.nose_tip_y + 0.03) / wy)
      beard_alpha = (np.clip((v_all - v_beard) * 8.0, 0.0, 1.0) * self.face_alpha *
                     np.clip((1.0 - np.abs(u_chin) / half_width) * 5.0, 0.0, 1.0))
      canvas.paint(full, beard_alpha * _col(0.8 * ip['beard']), self.brow * 0.85)

    # Front hair: cap above a wavy hairline that moves with yaw.
    u_hair = u_h - 0.35 * _col(np.sin(yaw))
    hairline = (_col(ap['hairline']) + 0.5 * u_hair ** 2 + 0.12 * _col(ap['hair_part']) * u_hair +
                0.05 * np.sin(9.0 * u_hair + _col(3.0 * ap['hair_part'])))
    d_cap = np.maximum(np.sqrt(u_h ** 2 + (v_h + 0.02) ** 2) - (1.0 + _col(vol) * 0.8),
                       v_h - hairline)
    self.hair_alpha = _coverage(d_cap, kk_h)
    canvas.paint(full, self.hair_alpha, hair)

    # Diffuse light on the ellipsoid normal: shade = 1 + strength * (max(0, n.l) - 0.55).
    light = _normalise(np.stack([ap['light_x'], ap['light_y'], 0.9 * one], -1))
    r2 = u_all ** 2 + v_all ** 2
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    cr, sr = _col(np.cos(roll)), _col(np.sin(roll))
    inv_r = 1.0 / np.sqrt(np.maximum(r2, 1.0))
    nx_img = (cr * u_all - sr * v_all) * inv_r
    ny_img = (sr * u_all + cr * v_all) * inv_r
    ndotl = nx_img * _col(light[:, 0]) + ny_img * _col(light[:, 1]) + nz * _col(light[:, 2])
    shade = 1.0 + _col(ap['light_strength']) * (np.maximum(ndotl, 0.0) - 0.55)
    fg = np.maximum(np.maximum(back_alpha, self.face_alpha), self.hair_alpha)
    canvas.multiply(1.0 + (shade - 1.0) * fg)

  def draw_marks(self):
    """A mole (mark1) and a larger faint mark (mark2), kept inside the skin."""
    ip, head, canvas, one = self.ip, self.head, self.canvas, self.one
    for prefix, aspect, alpha_scale in (('mark1', 1.0, 0.95), ('mark2', 0.35, 0.45)):
      size_m = ip[prefix + '_size']
      if not np.any(size_m > 0):
        continue
      angle = ip['mark2_angle'] if prefix == 'mark2' else 0 * one
      f, vis = head.surface_frame(ip[prefix + '_x'], ip[prefix + '_y'],
                                  local_transform=_rot2(angle))
      win = canvas.window(f.origin, size_m * head.scale + 0.02)
      if not win:
        continue
      u, v = f.local(canvas, win)
      radius = _col(np.maximum(size_m, 1e-3))
      alpha = (_coverage(_ellipse_sdf(u, v, radius, radius * aspect), f.k) *
               _col(vis * (size_m > 0) * alpha_scale))
      y0, y1, x0, x1 = win
      alpha *= self.face_alpha[:, y0:y1, x0:x1] * (1.0 - self.hair_alpha[:, y0:y1, x0:x1])
      colour = (_const([0.23, 0.14, 0.10], self.batch) if prefix == 'mark1'
                else self.skin * np.array([0.78, 0.55, 0.52], np.float32))
      canvas.paint(win, alpha, colour)

  def draw_brows(self):
    ip, ap, head, canvas = self.ip, self.ap, self.head, self.canvas
    for sign in (-1.0, 1.0):
      f, vis = head.surface_frame(
          sign * ip['eye_spacing'] * 1.02, ip['eye_height'] - ip['brow_height'] - ap['brow_raise'],
          local_transform=_mirror_rotate(sign * self.one, sign * ip['brow_angle']))
      half_len = ip['brow_length'] * ip['eye_size']
      win = canvas.window(f.origin, (half_len + 0.05) * head.scale)
      if not win:
        continue
      u, v = f.local(canvas, win)
      length = _col(half_len)
      t = np.clip(u / length, -1.0, 1.0)
      vv = v + _col(ip['brow_arch']) * 0.03 * (1.0 - t * t)
      thick = _col(ip['brow_thickness']) * (1.0 - 0.2 * (t + 1.0))  # thinner at the tail
      d = np.maximum(np.abs(vv) - thick, np.abs(u) - length)
      under_hair = self.hair_alpha[:, win[0]:win[1], win[2]:win[3]]
      canvas.paint(win, _coverage(d, f.k) * _col(vis) * (1.0 - 0.7 * under_hair),
                   self.brow * 0.55 + 0.02)

  def draw_eyes(self):
    """Socket shade, sclera (almond), iris, pupil, catch-light, lid crease and lash line."""
    ip, ap, head, canvas, batch = self.ip, self.ap, self.head, self.canvas, self.batch
    open_h = ip['eye_size'] * ip['eye_aspect'] * (1.0 - 0.25 * np.clip(ap['smile'], 0, 1))
    h_eff = np.maximum(open_h * (1.0 - 0.96 * ap['blink']), 0.003)
    for sign in (-1.0, 1.0):
      # Local u points to the outer corner of each eye (mirrored for the image-left eye).
      f, vis = head.surface_frame(sign * ip['eye_spacing'], ip['eye_height'],
                                  local_transform=_mirror_rotate(sign * self.one,
                                                                 -ip['eye_tilt']))
      self.eye_centres.append(f.origin)
      w = ip['eye_size']
      win = canvas.window(f.origin, (w * 1.6 + 0.02) * head.scale)
      if not win:
        continue
      u, v = f.local(canvas, win)
      wc, hc, oh, vis_c = _col(w), _col(h_eff), _col(open_h), _col(vis)
      canvas.paint(win, 0.22 * vis_c * _coverage(
          _ellipse_sdf(u, v + 0.2 * wc, wc * 1.35, wc * 0.9), f.k * 0.25), self.skin * 0.7)
      d_lens = _lens_sdf(u, v, wc, hc)
      sclera = _coverage(d_lens, f.k) * vis_c
      canvas.paint(win, sclera, _const([0.94, 0.92, 0.88], batch))
      ri = _col(ip['iris_size'] * w * 0.62)
      iu = u - sign * _col(ap['gaze_x'] * w * 0.35)  # both eyes look the same way
      iv = v - _col(ap['gaze_y'] * open_h * 0.25)
      r_iris = np.sqrt(iu * iu + iv * iv)
      canvas.paint(win, _coverage(r_iris - ri, f.k) * sclera, _rgb(ip, 'iris'))
      canvas.paint(win, _coverage(r_iris - 0.45 * ri, f.k) * sclera, _const([0.03] * 3, batch))
      hl_u = iu + 0.35 * ri * _col(ap['light_x']) * sign
      hl_v = iv + 0.35 * ri * (_col(ap['light_y']) + 0.5)
      canvas.paint(win, 0.85 * _coverage(np.sqrt(hl_u ** 2 + hl_v ** 2) - 0.2 * ri, f.k) *
                   sclera, _const([1.0] * 3, batch))
      crease = np.abs(_lens_sdf(u, v + 0.45 * oh, wc * 1.05, oh * 1.1 + 0.01))
      crease = np.maximum(crease - 0.004, v + 0.3 * oh)
      canvas.paint(win, 0.45 * vis_c * _coverage(crease, f.k), self.skin * 0.55)
      lash = np.abs(d_lens) - np.where(v < 0, 0.012, 0.005)
      canvas.paint(win, 0.9 * vis_c * _coverage(lash, f.k), _const([0.1, 0.07, 0.06], batch))

  def draw_nose(self):
    """Bridge shadow on the side away from the light, tip contour and nostrils."""
    ip, ap, head, canvas, skin = self.ip, self.ap, self.head, self.canvas, self.skin
    lift = 0.04 + 0.35 * ip['nose_length']
    shadow_side = np.where(ap['light_x'] > 0, -1.0, 1.0).astype(np.float32)
    f, vis = head.surface_frame(shadow_side * ip['nose_width'] * 0.5,
                                ip['eye_height'] + 0.55 * ip['nose_length'], lift=0.6 * lift)
    win = canvas.window(f.origin, (ip['nose_length'] * 0.7 + 0.02) * head.scale)
    if win:
      u, v = f.local(canvas, win)
      d = _capsule_sdf(u, v, _col(ip['nose_length']) * 0.5 - 0.018, 0.018)
      canvas.paint(win, _coverage(d, f.k * 0.4) *
                   _col(vis * (0.35 + 0.5 * ap['light_strength'])), skin * 0.62)
    f, vis = head.surface_frame(0 * self.one, self.nose_tip_y, lift=lift)
    nw = ip['nose_width'] * ip['nose_flare'] ** 0.5
    win = canvas.window(f.origin, (nw * 1.3 + 0.03) * head.scale)
    if win:
      u, v = f.local(canvas, win)
      nwc = _col(nw)
      ring = np.abs(_ellipse_sdf(u, v + 0.2 * nwc, nwc, 0.75 * nwc)) - 0.008
      canvas.paint(win, 0.55 * _coverage(ring, f.k) * np.clip(v * 80.0, 0, 1) * _col(vis),
                   skin * 0.6)
      for sign in (-1.0, 1.0):
        d = _ellipse_sdf(u - sign * 0.5 * nwc, v - 0.12 * nwc,
                         0.3 * nwc * _col(ip['nose_flare']), 0.2 * nwc)
        canvas.paint(win, 0.9 * _coverage(d, f.k) * _col(vis), skin * 0.3)

  def draw_mouth(self):
    """Interior and teeth (when open), upper and lower lip, closing line; smile lifts corners."""
    ip, ap, head, canvas, batch = self.ip, self.ap, self.head, self.canvas, self.batch
    f, vis = head.surface_frame(0 * self.one, self.nose_tip_y + ip['mouth_gap'])
    wm = ip['lip_width'] * (1.0 + 0.18 * np.clip(ap['smile'], 0, 1))
    win = canvas.window(f.origin, (wm + 0.1) * head.scale)
    if not win:
      return
    u, v = f.local(canvas, win)
    wmc, vis_c = _col(wm), _col(vis)
    t = np.clip(u / wmc, -1.0, 1.0)
    taper = np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))
    yc = -_col(ap['smile']) * _SMILE_BEND * t * t
    gap = _col(ap['mouth_open']) * 0.075
    side = np.abs(u) - wmc
    inner_top = yc - 0.5 * gap * taper
    inner_bot = yc + 0.5 * gap * taper
    if np.any(ap['mouth_open'] > 0):
      d_in = np.maximum(np.maximum(inner_top - v, v - inner_bot), side)
      a_in = _coverage(d_in, f.k) * vis_c * _col(np.clip(ap['mouth_open'] * 20.0, 0.0, 1.0))
      canvas.paint(win, a_in, _const([0.28, 0.07, 0.08], batch))
      d_teeth = np.maximum(v - (inner_top + 0.35 * gap), side + 0.25 * wmc)
      canvas.paint(win, _coverage(d_teeth, f.k) * a_in, _const([0.93, 0.9, 0.84], batch))
    lip = _rgb(ip, 'lip')
    top = inner_top - _col(ip['lip_upper']) * taper * (1.0 - 0.4 * np.exp(-(t / 0.22) ** 2))
    d_up = np.maximum(np.maximum(top - v, v - inner_top), side)
    canvas.paint(win, _coverage(d_up, f.k) * vis_c, lip * 0.92)
    bottom = inner_bot + _col(ip['lip_lower']) * taper
    d_low = np.maximum(np.maximum(inner_bot - v, v - bottom), side)
    canvas.paint(win, _coverage(d_low, f.k) * vis_c, lip)
    d_line = np.maximum(np.abs(v - yc) - 0.004, side + 0.01)
    closed = _col((ap['mouth_open'] < 0.05).astype(np.float32))
    canvas.paint(win, 0.7 * _coverage(d_line, f.k) * vis_c * closed, lip * 0.45)

  def draw_glasses(self):
    ip, ap, head, canvas = self.ip, self.ap, self.head, self.canvas
    on = _col((np.round(ap['occluder']) == OCCLUDER_GLASSES).astype(np.float32))
    s, roll, occ = head.scale, ap['roll'], _rgb(ap, 'occ')
    lens_r = ip['eye_size'] * (1.45 + 0.5 * ap['occ_size'])
    left, right = self.eye_centres
    mid = 0.5 * (left + right)
    win = canvas.window(mid, (ip['eye_spacing'] + lens_r * 1.3 + 0.05) * s)
    if not win:
      return
    d_frame = None
    for centre in (left, right):
      f = _Frame(centre, _rot2(roll) * s[:, None, None], self.size)
      u, v = f.local(canvas, win)
      d_lens = _ellipse_sdf(u, v, _col(lens_r), _col(lens_r) * 0.78)
      lens = on * _coverage(d_lens, f.k)
      canvas.paint(win, 0.18 * lens, occ)  # tinted glass
      self._occlude(win, lens)
      ring = np.abs(d_lens) - 0.011
      d_frame = ring if d_frame is None else np.minimum(d_frame, ring)
    f = _Frame(mid, _rot2(roll) * s[:, None, None], self.size)
    u, v = f.local(canvas, win)
    half = 0.5 * np.linalg.norm(right - left, axis=-1) / s - lens_r
    d_bridge = np.maximum(np.abs(v + 0.25 * _col(lens_r)) - 0.009,
                          np.abs(u) - _col(np.maximum(half, 0.0) + 0.01))
    frame = on * _coverage(np.minimum(d_frame, d_bridge), f.k)
    canvas.paint(win, frame, occ)
    self._occlude(win, frame)

  def draw_hand(self):
    """A palm, four fingers (with creases between them) and a thumb."""
    ap, head, canvas = self.ap, self.head, self.canvas
    on = _col((np.round(ap['occluder']) == OCCLUDER_HAND).astype(np.float32))
    hand_scale = 0.75 + 0.35 * ap['occ_size']
    centre = np.stack([ap['occ_x'], ap['occ_y']], -1)
    win = canvas.window(centre, 0.75 * hand_scale * head.scale)
    if not win:
      return
    f = _Frame(centre, _rot2(ap['occ_angle']) * (head.scale * hand_scale)[:, None, None],
               self.size)
    u, v = f.local(canvas, win)
    d_hand = _ellipse_sdf(u, v - 0.3, 0.21, 0.26)
    creases = None
    for i, (fx, half_len) in enumerate(((-0.15, 0.13), (-0.05, 0.19), (0.05, 0.2),
                                        (0.15, 0.16))):
      d_finger = _capsule_sdf(u - fx, v - (0.1 - half_len), half_len, 0.048)
      d_hand = np.minimum(d_hand, d_finger)
      if i > 0:
        crease = np.abs(d_finger) - 0.004
        creases = crease if creases is None else np.minimum(creases, crease)
    tu, tv = u - 0.26, v - 0.28  # thumb: a capsule tilted by 30 degrees
    d_hand = np.minimum(d_hand, _capsule_sdf(0.87 * tu - 0.5 * tv, 0.5 * tu + 0.87 * tv,
                                             0.1, 0.055))
    occ = _rgb(ap, 'occ')
    hand_alpha = on * _coverage(d_hand, f.k)
    canvas.paint(win, hand_alpha, occ, factor=0.82 + 0.18 * np.clip(0.5 - v, 0.0, 1.0))
    self._occlude(win, hand_alpha)
    canvas.paint(win, 0.45 * hand_alpha * _coverage(creases, f.k) * (v < 0.1), occ * 0.7)

  def finish(self):
    """Warm/cool light tint, then uint8 [B, S, S, 3]."""
    warmth = self.ap['light_warmth'] * 0.05
    tint = np.stack([1.0 + warmth, self.one, 1.0 - warmth], 0)  # [3, B]
    planes = self.canvas.planes
    planes *= 255.0 * tint[:, :, None, None]
    np.clip(planes, 0.0, 255.0, out=planes)
    planes += 0.5
    return np.ascontiguousarray(planes.astype(np.uint8).transpose(1, 2, 3, 0))


def render_batch(identity: np.ndarray, attributes: np.ndarray, size: int,
                 return_face_mask: bool = False, return_occluder_mask: bool = False,
                 hair_identity: np.ndarray | None = None):
  """Renders a batch of faces (vectorised over the batch; results do not depend on it).

  Args:
    identity: float [B, IDENTITY_DIM] (from sample_identity).
    attributes: float [B, ATTRIBUTE_DIM] (from sample_attributes).
    size: output side S in pixels.
    return_face_mask: also return the coverage of the face outline [B, S, S] in [0, 1].
    return_occluder_mask: also return the occluder's coverage [B, S, S] in [0, 1] (the
      glasses' lenses and frame, the hand; zeros without an occluder).
    hair_identity: None (single faces): the scalp hair is laid out on the face's own head
      (its size is the identity's face_width / face_height). Else float [B, IDENTITY_DIM]:
      on that identity's head: a swap's target in the ground-truth swaps of `pair_records`
      (dataset 3.0.0), which so keep the target's hair silhouette exactly.

  Returns:
    uint8 [B, S, S, 3] RGB images in [0, 255], followed by the asked masks in this order:
    (images, face_mask, occluder_mask).
  """
  scene = _Scene(np.asarray(identity, np.float32), np.asarray(attributes, np.float32), size,
                 hair_identity)
  scene.draw_clothes()
  scene.draw_head()
  scene.draw_marks()
  scene.draw_brows()
  scene.draw_eyes()
  scene.draw_nose()
  scene.draw_mouth()
  kind = np.round(scene.ap['occluder'])
  if np.any(kind == OCCLUDER_GLASSES):
    scene.draw_glasses()
  if np.any(kind == OCCLUDER_HAND):
    scene.draw_hand()
  out = scene.finish()
  masks = ([scene.face_alpha.astype(np.float32)] if return_face_mask else []) + (
      [scene.occluder_alpha] if return_occluder_mask else [])
  return (out, *masks) if masks else out


def inner_face_mask(identity: np.ndarray, attributes: np.ndarray, size: int,
                    hair_identity: np.ndarray | None = None) -> np.ndarray:
  """Coverage [B, S, S] in [0, 1] of the inner face: the face outline minus the front hair
  (the region a face swap changes; occluders drawn over it still count as inside);
  hair_identity as in `render_batch`."""
  scene = _Scene(np.asarray(identity, np.float32), np.asarray(attributes, np.float32), size,
                 hair_identity)
  scene.draw_head()
  return (scene.face_alpha * (1.0 - scene.hair_alpha)).astype(np.float32)


def render(identity: np.ndarray, attributes: np.ndarray, size: int) -> np.ndarray:
  """Renders one face: identity [IDENTITY_DIM], attributes [ATTRIBUTE_DIM] -> uint8 [S, S, 3]."""
  return render_batch(np.asarray(identity, np.float32)[None],
                      np.asarray(attributes, np.float32)[None], size)[0]


def landmarks5(identity: np.ndarray, attributes: np.ndarray, size: int) -> np.ndarray:
  """ArcFace-order landmarks in pixels [B, 5, 2]: eye centres (image left, right), nose tip,
  mouth corners (left, right); inputs [B, IDENTITY_DIM], [B, ATTRIBUTE_DIM]."""
  ip = _fields(identity, IDENTITY_FIELDS)
  ap = _fields(attributes, ATTRIBUTE_FIELDS)
  head = _Head(ip, ap, size)
  one = np.ones_like(ip['face_width'])
  pts = []
  for sign in (-1.0, 1.0):
    x = sign * ip['eye_spacing']
    pts.append(head.project(x, ip['eye_height'], head.surface_z(x, ip['eye_height']))[0])
  tip_y = ip['eye_height'] + ip['nose_length']
  lift = 0.04 + 0.35 * ip['nose_length']
  pts.append(head.project(0 * one, tip_y, head.surface_z(0 * one, tip_y) + lift)[0])
  mouth_y = tip_y + ip['mouth_gap']
  wm = ip['lip_width'] * (1.0 + 0.18 * np.clip(ap['smile'], 0, 1))
  for sign in (-1.0, 1.0):
    x = sign * wm
    y = mouth_y - ap['smile'] * _SMILE_BEND
    pts.append(head.project(x, y, head.surface_z(x, y))[0])
  pts = np.stack(pts, 1)
  return ((pts + 1.0) * 0.5 * size).astype(np.float32)


def identity_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of identity `index` of a split (train/test/...), stable across runs."""
  return np.random.default_rng([seed, _split_key(split), 0, index])


def attribute_rng(seed: int, split: str, index: int, image: int) -> np.random.Generator:
  """The generator of the attributes of image `image` of identity `index` of a split."""
  return np.random.default_rng([seed, _split_key(split), 1, index, image])


def _split_key(split: str) -> int:
  return int.from_bytes(split.encode('utf-8')[:8].ljust(8, b'\0'), 'little') & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------------
# Dataset records (used by tfds_builders/synthetic_faces; top-level so worker processes can
# run them).


def face_records(seed: int, split: str, size: int, images_per_identity: int,
                 label_offset: int, start: int, stop: int) -> list:
  """Records start..stop-1 of a single-face split, as (key, example) with PNG bytes.

  Record k is image k % images_per_identity of identity k // images_per_identity; its label
  is label_offset + identity.
  """
  from fsjax.data import tfds_utils  # pylint: disable=g-import-not-at-top
  keys = range(start, stop)
  cache = {}
  ids, atts = [], []
  for k in keys:
    i, j = divmod(k, images_per_identity)
    if i not in cache:
      cache[i] = sample_identity(identity_rng(seed, split, i))
    ids.append(cache[i])
    atts.append(sample_attributes(attribute_rng(seed, split, i, j)))
  ids, atts = np.stack(ids), np.stack(atts)
  images = render_batch(ids, atts, size)
  return [(k, {'image': tfds_utils.encode_png(images[n]),
               'label': label_offset + k // images_per_identity,
               'identity_params': ids[n],
               'attribute_params': atts[n]}) for n, k in enumerate(keys)]


def pair_records(seed: int, split: str, size: int, num_identities: int, label_offset: int,
                 start: int, stop: int, occluded: bool = False) -> list:
  """Pair records start..stop-1 of a split: (key, {source, target, swap, ...}).

  Source and target identities are two different identities of the split (drawn from
  `num_identities`); swap = render(identity of source, attributes of target), with the scalp
  hair laid out on the target's head (`render_batch(hair_identity=...)`, dataset 3.0.0), so the
  true swap keeps the target's hair silhouette and hairline exactly and changes the inner face,
  outline and ears. 'target_identity_params' stores the target's identity (for the face
  region: `inner_face_mask(identity_params, attribute_params, size, target_identity_params)`).
  With `occluded`, every target carries an occluder (glasses or a hand, half each; the source
  none), the true swap keeps it (it is a target attribute), and the record adds
  'occluder_mask': the occluder's coverage in the swap as uint8 [S, S, 1] PNG (0-255). The
  sources, targets and identities are those of the plain pairs; only the occluders differ.
  """
  from fsjax.data import tfds_utils  # pylint: disable=g-import-not-at-top
  if num_identities < 2:
    raise ValueError(f'pairs need at least 2 identities, got {num_identities}')
  pair_split = f'pairs_{split}'
  keys = range(start, stop)
  src_ids, tgt_ids, src_atts, tgt_atts, labels = [], [], [], [], []
  for k in keys:
    rng = attribute_rng(seed, pair_split, k, 2)
    i_s = int(rng.integers(num_identities))
    i_t = (i_s + 1 + int(rng.integers(num_identities - 1))) % num_identities
    labels.append((label_offset + i_s, label_offset + i_t))
    src_ids.append(sample_identity(identity_rng(seed, split, i_s)))
    tgt_ids.append(sample_identity(identity_rng(seed, split, i_t)))
    src_att = sample_attributes(attribute_rng(seed, pair_split, k, 0))
    tgt_att = sample_attributes(attribute_rng(seed, pair_split, k, 1))
    if occluded:
      rng = attribute_rng(seed, pair_split, k, 3)
      kind = (OCCLUDER_GLASSES, OCCLUDER_HAND)[int(rng.integers(2))]
      src_att = replace_fields(src_att, ATTRIBUTE_FIELDS, occluder=float(OCCLUDER_NONE))
      tgt_att = replace_fields(tgt_att, ATTRIBUTE_FIELDS, **sample_occluder(rng, kind))
    src_atts.append(src_att)
    tgt_atts.append(tgt_att)
  n = len(labels)
  # Sources and targets are plain renders (their hair on their own head); only the swaps
  # need the second head frame and the occluder mask.
  faces = render_batch(np.stack(src_ids + tgt_ids), np.stack(src_atts + tgt_atts), size)
  swaps, occluder = render_batch(np.stack(src_ids), np.stack(tgt_atts), size,
                                 return_occluder_mask=True, hair_identity=np.stack(tgt_ids))
  png = tfds_utils.encode_png
  records = []
  for m, k in enumerate(keys):
    record = {'source': png(faces[m]), 'target': png(faces[n + m]), 'swap': png(swaps[m]),
              'source_label': labels[m][0], 'target_label': labels[m][1],
              'identity_params': src_ids[m], 'attribute_params': tgt_atts[m],
              'target_identity_params': tgt_ids[m]}
    if occluded:
      record['occluder_mask'] = png(np.rint(255.0 * occluder[m])[..., None].astype(np.uint8))
    records.append((k, record))
  return records


def occluded_pair_records(seed: int, split: str, size: int, num_identities: int,
                          label_offset: int, start: int, stop: int) -> list:
  """`pair_records(..., occluded=True)`: the records of the occludedN configs."""
  return pair_records(seed, split, size, num_identities, label_offset, start, stop,
                      occluded=True)
