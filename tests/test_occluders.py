"""Tests of fsjax.data.occluders: the HEAR-Net occluder recipe (numpy only)."""

import os

import numpy as np
import pytest
from PIL import Image

import train_helpers
from fsjax.data import occluders as occ


@pytest.fixture(scope='module')
def occluder_set():
  return occ.procedural_occluders(np.random.default_rng(0), num_hands=6, num_objects=8,
                                  size=96)


def _face(size=128, seed=0):
  """A textured stand-in face image: uint8 [S, S, 3]."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _fringe(image_size, cutouts, face_box=occ.ALIGNED_FACE_BOX):
  """Pixels around the mask (alpha >= 0.5) that a paste may touch with alpha < 0.5: the
  cut-outs' 1-pixel soft edges and the bilinear ramp, both stretched by the magnification k
  (the largest: the longest paste, scale 1 x face size, of the shortest cut-out)."""
  face = max(face_box[2] - face_box[0], face_box[3] - face_box[1]) * image_size
  k = face / min(max(c.shape[:2]) for c in cutouts)
  return int(np.ceil(k)) + 1


def _two_colour_bar(length=60, width=12):
  """An opaque horizontal bar, red left half, blue right half: uint8 [width, length, 4]."""
  bar = np.zeros((width, length, 4), np.uint8)
  bar[:, :length // 2] = (255, 0, 0, 255)
  bar[:, length // 2:] = (0, 0, 255, 255)
  return bar


def test_procedural_set_is_valid_and_deterministic(occluder_set):
  again = occ.procedural_occluders(np.random.default_rng(0), num_hands=6, num_objects=8,
                                   size=96)
  other = occ.procedural_occluders(np.random.default_rng(1), num_hands=6, num_objects=8,
                                   size=96)
  assert len(occluder_set.hands) == 6 and len(occluder_set.objects) == 8
  for a, b in zip(occluder_set.hands + occluder_set.objects, again.hands + again.objects):
    np.testing.assert_array_equal(a, b)
  assert any(a.shape != b.shape or np.any(a != b)
             for a, b in zip(occluder_set.hands, other.hands))
  for c in occluder_set.hands + occluder_set.objects:
    assert c.dtype == np.uint8 and c.ndim == 3 and c.shape[2] == 4
    alpha = c[..., 3]
    # Cropped to the shape (every border row / column has some coverage), solid inside.
    assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
    assert np.mean(alpha == 255) > 0.1
  # Hands are skin-coloured (red >= blue where opaque), one shape of each object kind.
  for h in occluder_set.hands:
    opaque = h[..., 3] == 255
    assert np.mean(h[..., 0][opaque].astype(int) >= h[..., 2][opaque]) > 0.95
  for shape in occ.OBJECT_SHAPES:
    assert occ.render_object(np.random.default_rng(2), 64, shape).shape[2] == 4
  with pytest.raises(ValueError, match='unknown object shape'):
    occ.render_object(np.random.default_rng(2), 64, 'teapot')
  assert occ.build_occluders(None, seed=3, num_procedural=2, size=48).hands[0].shape[2] == 4


def test_paste_is_deterministic(occluder_set):
  image = _face()
  runs = [occ.occlude(image, np.random.default_rng(7), occluder_set) for _ in range(2)]
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  assert runs[0][2] == runs[1][2]
  a = occ.paste_occluder(image, np.random.default_rng(3), occluder_set.hands)
  b = occ.paste_occluder(image, np.random.default_rng(3), occluder_set.hands)
  c = occ.paste_occluder(image, np.random.default_rng(4), occluder_set.hands)
  np.testing.assert_array_equal(a[0], b[0])
  assert np.any(a[1] != c[1])
  p1 = occ.occluded_pair(image, _face(seed=1), np.random.default_rng(5), occluder_set)
  p2 = occ.occluded_pair(image, _face(seed=1), np.random.default_rng(5), occluder_set)
  np.testing.assert_array_equal(p1.x_t, p2.x_t)
  assert (p1.same, p1.kind) == (p2.same, p2.kind)
  np.testing.assert_array_equal(image, _face())  # the input is not modified


def test_mask_is_the_changed_pixels(occluder_set):
  """Opaque cut-outs on a plain background: every mask pixel changed; outside the mask's
  fringe of partial coverage (`_fringe`) nothing changed, also on a textured image."""
  rng = np.random.default_rng(11)
  grey = np.full((160, 160, 3), 128, np.uint8)
  solid = np.zeros((30, 50, 4), np.uint8)
  solid[..., :3] = (250, 10, 30)
  solid[..., 3] = 255
  for cutouts in ([solid], occluder_set.objects, occluder_set.hands):
    for _ in range(5):
      out, mask = occ.paste_occluder(grey, rng, cutouts)
      changed = np.any(out != grey, axis=-1)
      assert mask.any() and mask.dtype == bool and mask.shape == (160, 160)
      r = _fringe(160, cutouts)
      assert not np.any(changed & ~train_helpers.dilate(mask, r)), 'changes outside the occluder'
      if cutouts is not occluder_set.hands:  # hands may be grey-ish where shaded
        assert np.mean(changed[mask]) > 0.99
  out, mask = occ.paste_cutout(grey, solid, 50, 30.0, (80, 80))  # k = 1: a 2-px fringe
  changed = np.any(out != grey, axis=-1)
  assert np.all(changed[mask]) and not np.any(changed & ~train_helpers.dilate(mask, 2))
  # Opaque interior pixels take the cut-out colour exactly.
  interior = mask & ~train_helpers.dilate(~mask, 1)
  assert interior.sum() > 500 and np.all(out[interior] == (250, 10, 30))
  face = _face(160)
  for _ in range(5):
    out, mask = occ.paste_occluder(face, rng, occluder_set.objects)
    outside = ~train_helpers.dilate(mask, _fringe(160, occluder_set.objects))
    np.testing.assert_array_equal(out[outside], face[outside])
  # Entirely outside the image: nothing changes.
  out, mask = occ.paste_cutout(face, solid, 40, 0.0, (-100, -100))
  np.testing.assert_array_equal(out, face)
  assert not mask.any()


def test_scale_and_rotation_ranges():
  """An opaque square covers (scale x face size)^2 pixels: the measured areas stay in
  [0.5^2, 1^2] of face^2 and span it; a two-colour bar's red -> blue direction gives the
  rotation: within +-90 degrees and spanning it (an unbounded rotation would flip it)."""
  rng = np.random.default_rng(0)
  canvas = np.zeros((400, 400, 3), np.uint8)
  box = (0.45, 0.45, 0.55, 0.55)  # face size 40 px, centred: nothing falls off the canvas
  square = np.full((64, 64, 4), 255, np.uint8)
  areas = []
  for _ in range(60):
    _, mask = occ.paste_occluder(canvas, rng, [square], face_box=box)
    areas.append(mask.sum() / 40.0 ** 2)
  areas = np.array(areas)
  assert areas.min() >= 0.25 * 0.93 and areas.max() <= 1.0 * 1.07, (areas.min(), areas.max())
  assert areas.min() < 0.33 and areas.max() > 0.85

  bar = _two_colour_bar()
  angles, centres = [], []
  for _ in range(80):
    out, mask = occ.paste_occluder(canvas, rng, [bar], face_box=box)
    red = np.argwhere((out[..., 0] > 128) & mask)[:, ::-1].mean(axis=0)  # (x, y)
    blue = np.argwhere((out[..., 2] > 128) & mask)[:, ::-1].mean(axis=0)
    d = blue - red
    angles.append(np.degrees(np.arctan2(-d[1], d[0])))  # counter-clockwise on screen
    centres.append(np.argwhere(mask)[:, ::-1].mean(axis=0))
  angles = np.array(angles)
  assert np.all(np.abs(angles) <= 90.0 + 3.0), angles
  assert angles.min() < -70 and angles.max() > 70
  centres = np.array(centres)  # uniform inside the face box (pixels 180..220)
  assert centres.min() >= 180 - 1.5 and centres.max() <= 220 + 1.5
  # The explicit form: 90 degrees counter-clockwise puts the blue end on top.
  out, mask = occ.paste_cutout(canvas, bar, 60, 90.0, (200, 200))
  blue_y = np.argwhere(out[..., 2] > 128)[:, 0].mean()
  red_y = np.argwhere(out[..., 0] > 128)[:, 0].mean()
  assert blue_y < red_y - 20
  # Strong shrinking (box-filtered path) keeps the area: 64 px -> 10 px.
  _, mask = occ.paste_cutout(canvas, np.full((200, 200, 4), 255, np.uint8), 10, 0.0,
                             (200, 200))
  assert abs(int(mask.sum()) - 100) <= 21


def test_mix_frequencies_and_pairs(occluder_set):
  rng = np.random.default_rng(0)
  n = 4000
  kinds = [occ.sample_mix(rng) for _ in range(n)]
  for k in occ.MIX_KINDS:  # 25% each; 4 sigma of a binomial(4000, 0.25) is 2.7%
    assert abs(kinds.count(k) / n - 0.25) < 0.03, (k, kinds.count(k))
  skewed = [occ.sample_mix(rng, (0.7, 0.1, 0.1, 0.1)) for _ in range(2000)]
  assert abs(skewed.count('none') / 2000 - 0.7) < 0.04
  with pytest.raises(ValueError, match='probabilities'):
    occ.sample_mix(rng, (0.5, 0.5, 0.5))
  with pytest.raises(ValueError, match='probabilities'):
    occ.sample_mix(rng, (0.5, 0.5, 0.5, 0.5))

  src, tgt = _face(64, 0), _face(64, 1)
  pairs = [occ.occluded_pair(src, tgt, rng, occluder_set) for _ in range(400)]
  same = np.mean([p.same for p in pairs])
  assert abs(same - 0.5) < 0.1
  for p in pairs:
    np.testing.assert_array_equal(p.x_s, src)
    base = src if p.same else tgt
    if p.kind == 'none':
      np.testing.assert_array_equal(p.x_t, base)
      assert not p.mask.any()
    else:
      assert p.mask.any()
      group = occluder_set.objects if p.kind == 'object' else occluder_set.hands
      if p.kind == 'both':
        group = group + occluder_set.objects
      outside = ~train_helpers.dilate(p.mask, _fringe(64, group))
      np.testing.assert_array_equal(p.x_t[outside], base[outside])
  assert {p.kind for p in pairs} == set(occ.MIX_KINDS)
  assert all(p.same for p in (occ.occluded_pair(src, tgt, rng, occluder_set, 1.0)
                              for _ in range(5)))
  with pytest.raises(ValueError, match='probability'):
    occ.occluded_pair(src, tgt, rng, occluder_set, 1.5)


def test_png_round_trip_and_folder_loading(tmp_path, occluder_set):
  root = tmp_path / 'occ'
  (root / 'hands').mkdir(parents=True)
  (root / 'objects').mkdir()
  for i, c in enumerate(occluder_set.hands[:2]):
    occ.save_cutout(root / 'hands' / f'h{i}.png', c)
  for i, c in enumerate(occluder_set.objects[:3]):
    occ.save_cutout(root / 'objects' / f'o{i}.PNG', c)
  (root / 'objects' / 'notes.txt').write_text('ignored')
  loaded = occ.load_occluders(root)
  assert len(loaded.hands) == 2 and len(loaded.objects) == 3
  for a, b in zip(loaded.hands + loaded.objects,
                  occluder_set.hands[:2] + occluder_set.objects[:3]):
    np.testing.assert_array_equal(a, b)  # exact: lossless PNG of a cropped cut-out
  assert occ.build_occluders(str(root)).objects[2].shape == occluder_set.objects[2].shape
  # A padded cut-out is cropped on load; a palette PNG with a transparent colour is accepted.
  padded = np.zeros((40, 40, 4), np.uint8)
  padded[10:20, 5:30] = (1, 2, 3, 255)
  occ.save_cutout(tmp_path / 'padded.png', padded)
  assert occ.load_cutout(tmp_path / 'padded.png').shape == (10, 25, 4)
  pal = Image.fromarray(np.where(padded[..., 3] > 0, 1, 0).astype(np.uint8), mode='P')
  pal.putpalette([0, 0, 0, 200, 50, 50] + [0] * 762)
  pal.save(tmp_path / 'palette.png', transparency=0)
  assert occ.load_cutout(tmp_path / 'palette.png').shape == (10, 25, 4)

  # Refusals, each with a message that names the problem.
  with pytest.raises(ValueError, match='is empty'):
    occ.load_occluders('')
  with pytest.raises(ValueError, match='does not exist'):
    occ.load_occluders(tmp_path / 'missing')
  with pytest.raises(ValueError, match='not a folder'):
    occ.load_occluders(tmp_path / 'padded.png')
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='no PNG cut-outs in hands/'):
    occ.load_occluders(empty)
  (empty / 'hands').mkdir()
  occ.save_cutout(empty / 'hands' / 'a.png', occluder_set.hands[0])
  (empty / 'objects').mkdir()
  with pytest.raises(ValueError, match='no PNG cut-outs in objects/'):
    occ.load_occluders(empty)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(empty / 'objects' / 'rgb.png')
  with pytest.raises(ValueError, match='no alpha channel'):
    occ.load_occluders(empty)
  os.remove(empty / 'objects' / 'rgb.png')
  Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(empty / 'objects' / 't.png')
  with pytest.raises(ValueError, match='fully transparent'):
    occ.load_occluders(empty)
  os.remove(empty / 'objects' / 't.png')
  (empty / 'objects' / 'bad.png').write_bytes(b'not a png')
  with pytest.raises(ValueError, match='not a readable image'):
    occ.load_occluders(empty)
  with pytest.raises(ValueError, match='at least one'):
    occ.OccluderSet(hands=(), objects=occluder_set.objects)
  with pytest.raises(ValueError, match=r'uint8 \[h, w, 4\]'):
    occ.OccluderSet(hands=(np.zeros((4, 4, 3), np.uint8),), objects=occluder_set.objects)
