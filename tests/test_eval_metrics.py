"""Tests of fsjax.eval.metrics, fsjax.faces.pose and fsjax.faces.recognize (issue #17).

Known answers: PSNR of a known error, SSIM against scikit-image, retrieval on embeddings
built with known ranks, head pose of the generic 3-D model projected through the same
camera, expression distance under similarities. The recognizer runs on
skimage.data.astronaut() always and on the real photos of FSJAX_TEST_FACES when set.
"""

import os

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import structural_similarity

from fsjax.data import image_io
from fsjax.eval import metrics
from fsjax.faces import detect as detect_lib
from fsjax.faces import pose as pose_lib
from fsjax.faces import recognize

SSIM_TOL = 1e-4
POSE_EXACT_TOL = 1e-6  # Degrees, noiseless projections (measured: about 1e-10).
POSE_NOISE_MEAN_TOL = 2.5  # Degrees, mean |error| per angle at 1 px landmark noise.


@pytest.fixture(scope='module')
def detector():
  return detect_lib.DlibDetector()


@pytest.fixture(scope='module')
def recognizer(detector):
  return recognize.DlibRecognizer(detector=detector)


@pytest.fixture(scope='module')
def astronaut(detector):
  image = skdata.astronaut()
  faces = detector.detect(image)
  assert faces, 'the astronaut face must be found'
  return image, faces[0]


def _noisy_pair(seed=0, shape=(96, 128, 3), sigma=12.0):
  """A natural-image crop and a noisy copy, uint8."""
  rng = np.random.default_rng(seed)
  a = skdata.astronaut()[60:60 + shape[0], 150:150 + shape[1], :shape[2]]
  b = np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)
  return a, b


def _skimage_ssim(a, b, data_range, full=False):
  return structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, channel_axis=-1,
                               data_range=data_range, full=full)


# ---------------------------------------------------------------------------- PSNR/SSIM
def test_identical_images_psnr_inf_ssim_one():
  a, _ = _noisy_pair()
  assert metrics.psnr(a, a) == np.inf
  assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
  f = a.astype(np.float32) / 255.0
  assert metrics.psnr(f, f, data_range=1.0) == np.inf
  assert metrics.ssim(f, f, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
  batch = np.stack([a, a])
  np.testing.assert_array_equal(metrics.psnr(batch, batch), [np.inf, np.inf])
  np.testing.assert_allclose(metrics.ssim(batch, batch), [1.0, 1.0], atol=1e-12)


def test_psnr_known_error_is_analytic():
  # A +-5 checkerboard error on a mid-grey image: MSE = 25 exactly (no clipping).
  a = np.full((32, 48, 3), 100, np.uint8)
  sign = np.where((np.indices((32, 48)).sum(axis=0) % 2) == 0, 5, -5)[..., None]
  b = (a.astype(np.int16) + sign).astype(np.uint8)
  want = 10 * np.log10(255.0 ** 2 / 25.0)  # 34.15 dB.
  assert metrics.psnr(a, b) == pytest.approx(want, abs=1e-9)
  assert metrics.mse(a, b) == pytest.approx(25.0)
  # The same in [0, 1] floats, and in [-1, 1] (R = 2).
  assert metrics.psnr(a / 255.0, b / 255.0, data_range=1.0) == pytest.approx(want, abs=1e-9)
  assert metrics.psnr(a / 127.5 - 1, b / 127.5 - 1, data_range=2.0) == pytest.approx(
      want, abs=1e-9)
  # Gaussian noise of sigma 4 gives about 10 log10(255^2 / 16) (sampling error ~0.01 dB).
  rng = np.random.default_rng(1)
  c = np.full((256, 256, 3), 128.0)
  noisy = c + rng.normal(0, 4.0, c.shape)
  assert metrics.psnr(c, noisy, data_range=255.0) == pytest.approx(
      10 * np.log10(255.0 ** 2 / 16.0), abs=0.05)


def test_psnr_masked_counts_only_the_mask():
  a = np.full((40, 40, 3), 50, np.uint8)
  b = a.copy()
  mask = np.zeros((40, 40), bool)
  mask[10:30, 10:30] = True
  b[~mask] = 0  # Large errors outside the mask only.
  assert metrics.psnr(a, b, mask) == np.inf
  b[15, 15, 0] = 53  # One channel of one masked pixel off by 3: MSE = 9 / (400 * 3).
  assert metrics.psnr(a, b, mask) == pytest.approx(10 * np.log10(255 ** 2 * 1200 / 9.0))
  assert np.isnan(metrics.psnr(a, b, np.zeros((40, 40), bool)))


def test_float_images_need_data_range():
  a, b = _noisy_pair()
  with pytest.raises(ValueError, match='data_range'):
    metrics.psnr(a / 255.0, b / 255.0)
  with pytest.raises(ValueError, match='data_range'):
    metrics.ssim(a / 255.0, b / 255.0)


def test_mean_psnr_inf_policies():
  values = [30.0, np.inf, 40.0, np.nan]
  assert metrics.mean_psnr(values) == pytest.approx((30 + 100 + 40) / 3)
  assert metrics.mean_psnr(values, cap=50.0) == pytest.approx((30 + 50 + 40) / 3)
  assert metrics.mean_psnr(values, inf='exclude') == pytest.approx(35.0)
  assert np.isnan(metrics.mean_psnr([np.inf], inf='exclude'))
  assert metrics.mean_ssim([0.5, 1.0, np.nan]) == pytest.approx(0.75)


@pytest.mark.parametrize('seed,sigma', [(0, 12.0), (1, 40.0)])
def test_ssim_matches_skimage(seed, sigma):
  a, b = _noisy_pair(seed, sigma=sigma)
  want = _skimage_ssim(a, b, 255)
  assert metrics.ssim(a, b) == pytest.approx(want, abs=SSIM_TOL)
  fa, fb = a / 255.0, b / 255.0
  assert metrics.ssim(fa, fb, data_range=1.0) == pytest.approx(
      _skimage_ssim(fa, fb, 1.0), abs=SSIM_TOL)
  # Batches give the per-pair values.
  a2, b2 = _noisy_pair(seed + 10, sigma=sigma)
  got = metrics.ssim(np.stack([a, a2]), np.stack([b, b2]))
  np.testing.assert_allclose(got, [want, _skimage_ssim(a2, b2, 255)], atol=SSIM_TOL)


def test_masked_ssim_matches_skimage_map():
  # Masked SSIM = scikit-image's full SSIM map, averaged over channels, averaged over the
  # mask where the 11 x 11 window fits inside the image (5 px border cropped).
  a, b = _noisy_pair(2, shape=(100, 120, 3))
  yy, xx = np.mgrid[:100, :120]
  mask = ((xx - 55) / 40.0) ** 2 + ((yy - 50) / 48.0) ** 2 <= 1  # Touches the border.
  _, s = _skimage_ssim(a, b, 255, full=True)
  r = metrics.SSIM_RADIUS
  want = s.mean(axis=-1)[r:-r, r:-r][mask[r:-r, r:-r]].mean()
  assert metrics.ssim(a, b, mask) == pytest.approx(want, abs=SSIM_TOL)
  # A full mask is the unmasked SSIM; a mask only on the cropped border is empty (NaN).
  assert metrics.ssim(a, b, np.ones((100, 120), bool)) == pytest.approx(
      metrics.ssim(a, b), abs=1e-12)
  border = np.zeros((100, 120), bool)
  border[:r] = True
  assert np.isnan(metrics.ssim(a, b, border))
  # A per-image mask [B, H, W].
  got = metrics.ssim(np.stack([a, a]), np.stack([b, a]), np.stack([mask, mask]))
  np.testing.assert_allclose(got, [want, 1.0], atol=SSIM_TOL)


# --------------------------------------------------------------------------- retrieval
def test_retrieval_of_exact_sources_is_perfect():
  rng = np.random.default_rng(0)
  gallery = rng.normal(size=(50, 16))
  acc = metrics.id_retrieval(gallery * 3.0, gallery, np.arange(50), ks=(1, 5))
  assert acc == {1: 1.0, 5: 1.0}
  # A permuted gallery with the matching indices is still perfect...
  perm = rng.permutation(50)
  inverse = np.argsort(perm)  # gallery[perm][inverse[i]] == gallery[i].
  assert metrics.id_retrieval(gallery, gallery[perm], inverse)[1] == 1.0
  # ...and with the unpermuted indices only the fixed points of the permutation hit.
  perm = np.arange(50)
  perm[:40] = np.roll(perm[:40], 1)  # 10 fixed points.
  assert metrics.id_retrieval(gallery, gallery[perm], np.arange(50))[1] == pytest.approx(0.2)


def test_retrieval_known_ranks():
  # Gallery: the 10 unit vectors. Query i weights them 10, 9, ..., 1 in the order
  # order[i], so gallery entry order[i][r] has rank r; the truth is set at rank want[i].
  rng = np.random.default_rng(3)
  gallery = np.eye(10)
  want = np.array([0, 0, 1, 3, 4, 5, 7, 9])
  queries, truth = [], []
  for r in want:
    order = rng.permutation(10)
    q = np.zeros(10)
    q[order] = np.arange(10, 0, -1)
    queries.append(q)
    truth.append(order[r])
  ranks = metrics.retrieval_ranks(np.array(queries), gallery, truth)
  np.testing.assert_array_equal(ranks, want)
  acc = metrics.id_retrieval(np.array(queries), gallery, truth, ks=(1, 5, 10))
  assert acc == {1: 2 / 8, 5: 5 / 8, 10: 1.0}


def test_retrieval_with_gallery_labels_and_ties():
  # FF++ style: 3 frames per video, a hit is any frame of the query's source video.
  rng = np.random.default_rng(4)
  centres = rng.normal(size=(4, 32))
  gallery = np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(12, 32))
  labels = np.repeat(np.arange(4), 3)
  queries = centres + 0.05 * rng.normal(size=(4, 32))
  assert metrics.id_retrieval(queries, gallery, np.arange(4), gallery_labels=labels) == {
      1: 1.0, 5: 1.0}
  # Wrong labels for the last two queries: top-1 drops to 1/2; an absent label never hits.
  truth = np.array([0, 1, 3, 2])
  assert metrics.id_retrieval(queries, gallery, truth, ks=(1,),
                              gallery_labels=labels)[1] == 0.5
  assert metrics.retrieval_ranks(queries[:1], gallery, [7], labels)[0] == 12
  # An exact duplicate under another label ties and counts against the query.
  dup = np.stack([centres[0], centres[0], centres[1]])
  np.testing.assert_array_equal(metrics.retrieval_ranks(centres[:1], dup, [0]), [1])


def test_mean_cosine():
  rng = np.random.default_rng(5)
  a = rng.normal(size=(6, 8))
  assert metrics.mean_cosine(a, 2.5 * a) == pytest.approx(1.0)
  assert metrics.mean_cosine(a, -a) == pytest.approx(-1.0)
  e = np.eye(4)
  assert metrics.mean_cosine(e, np.roll(e, 1, axis=0)) == pytest.approx(0.0)


# ------------------------------------------------------------ pose/expression/paste-back
def test_pose_and_expression_error():
  assert metrics.pose_error([[20, 0, 0]], [[0, 0, 0]]) == pytest.approx(20.0)
  assert metrics.pose_error([[3, 4, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 12]]) == (
      pytest.approx(8.5))
  assert metrics.pose_error([0, 0, 179], [0, 0, -179]) == pytest.approx(2.0)
  assert metrics.expression_error([[1, 2, 2], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]) == (
      pytest.approx(1.5))


def test_unchanged_fraction():
  rng = np.random.default_rng(6)
  target = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  mask = np.zeros((20, 30), bool)
  mask[5:15, 10:20] = True  # 100 inside, 500 outside.
  output = target.copy()
  output[mask] = 0
  assert metrics.unchanged_fraction(output, target, mask) == 1.0
  output[0, :25, 1] ^= 1  # 25 outside pixels changed in one channel.
  assert metrics.unchanged_fraction(output, target, mask) == pytest.approx(475 / 500)
  # A float alpha mask: > 0 is inside.
  alpha = mask * 0.3
  assert metrics.unchanged_fraction(output, target, alpha) == pytest.approx(475 / 500)
  got = metrics.unchanged_fraction(np.stack([output, target]), np.stack([target, target]),
                                   mask)
  np.testing.assert_allclose(got, [0.95, 1.0])


# ------------------------------------------------------------------------------- pose
SHAPE = (480, 640)


def _model_landmarks(pose, translation=None, image_shape=SHAPE):
  """[68, 2] landmarks holding the projected model points (others 0, unused by pose)."""
  lm = np.zeros((68, 2))
  lm[list(pose_lib.MODEL_LANDMARKS)] = pose_lib.project_model(pose, image_shape, translation)
  return lm


def test_pose_recovers_known_rotation():
  est = pose_lib.head_pose(_model_landmarks((20, 0, 0)), SHAPE)
  np.testing.assert_allclose(est, [20, 0, 0], atol=POSE_EXACT_TOL)
  frontal = pose_lib.head_pose(_model_landmarks((0, 0, 0)), SHAPE)
  np.testing.assert_allclose(frontal, [0, 0, 0], atol=POSE_EXACT_TOL)
  assert metrics.pose_error(est[None], frontal[None]) == pytest.approx(20.0,
                                                                       abs=POSE_EXACT_TOL)
  cases = [(-35, 10, 5), (10, -20, -15), (45, 15, 20), (-60, -10, 30), (0, 30, 0)]
  lms = [_model_landmarks(p) for p in cases]
  lms += [_model_landmarks(p, (300.0, -200.0, 2000.0)) for p in cases]  # Off axis.
  np.testing.assert_allclose(pose_lib.head_pose_batch(lms, SHAPE), cases + cases,
                             atol=POSE_EXACT_TOL)


def test_pose_with_landmark_noise():
  rng = np.random.default_rng(7)
  poses = rng.uniform([-40, -20, -20], [40, 20, 20], size=(100, 3))
  lms = [_model_landmarks(p) + rng.normal(0, 1.0, (68, 2)) for p in poses]  # ~110 px face.
  err = np.abs(pose_lib.head_pose_batch(lms, SHAPE) - poses)
  assert np.all(err.mean(axis=0) < POSE_NOISE_MEAN_TOL), err.mean(axis=0)


def test_pose_sign_conventions():
  nose, left_eye, right_eye = 0, 2, 3  # Rows of MODEL_POINTS_3D.

  def nose_offset(pose):
    p = pose_lib.project_model(pose, SHAPE)
    return p[nose] - (p[left_eye] + p[right_eye]) / 2

  assert nose_offset((20, 0, 0))[0] < -10  # Yaw > 0: the nose turns to image left.
  assert nose_offset((0, 20, 0))[1] > nose_offset((0, 0, 0))[1] + 5  # Pitch > 0: down.
  p = pose_lib.project_model((0, 0, 25), SHAPE)
  eye_line = p[right_eye] - p[left_eye]
  assert np.degrees(np.arctan2(eye_line[1], eye_line[0])) == pytest.approx(25.0)
  for yaw, pitch, roll in np.random.default_rng(8).uniform(-80, 80, (20, 3)):
    r = pose_lib.rotation_from_euler(yaw, pitch, roll)
    np.testing.assert_allclose(pose_lib.euler_from_rotation(r), [yaw, pitch, roll],
                               atol=1e-9)


def test_pose_of_mirrored_face_flips_yaw_and_roll(astronaut):
  # The model and camera are left-right symmetric, so mirroring the image negates yaw
  # and roll and keeps pitch (to solver precision).
  image, face = astronaut
  lm = face.landmarks68.astype(np.float64)
  mirrored = lm.copy()
  mirrored[:, 0] = image.shape[1] - 1 - mirrored[:, 0]
  mirrored = mirrored[pose_lib.MIRROR_68]
  yaw, pitch, roll = pose_lib.head_pose(lm, image.shape)
  np.testing.assert_allclose(pose_lib.head_pose(mirrored, image.shape), [-yaw, pitch, -roll],
                             atol=1e-4)


# -------------------------------------------------------------------------- expression
def _similarity(points, angle_deg, scale, shift):
  a = np.radians(angle_deg)
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  return np.asarray(points, np.float64) @ (scale * rot).T + np.asarray(shift)


def test_reference_shape_is_symmetric_mean():
  ref = pose_lib.REFERENCE_68
  assert sorted(pose_lib.MIRROR_68) == list(range(68))
  np.testing.assert_array_equal(pose_lib.MIRROR_68[pose_lib.MIRROR_68], np.arange(68))
  np.testing.assert_allclose(pose_lib.mirror(ref), ref, atol=1e-4)
  np.testing.assert_allclose(pose_lib.canonical_frame(ref), ref, atol=1e-4)
  np.testing.assert_allclose(pose_lib.expression_descriptor(ref), 0.0, atol=1e-12)
  np.testing.assert_allclose(pose_lib.mean_shape([_similarity(ref, 30, 80, (200, 100))]),
                             ref, atol=1e-3)


def test_expression_invariant_to_similarity(astronaut):
  _, face = astronaut
  for lm in (face.landmarks68, pose_lib.REFERENCE_68 * 90 + 200):
    d0 = pose_lib.expression_descriptor(lm)
    assert d0.shape == (102,)
    for angle, scale, shift in [(25, 1.7, (40, -30)), (-60, 0.3, (500, 500)), (180, 2, (0, 0))]:
      d1 = pose_lib.expression_descriptor(_similarity(lm, angle, scale, shift))
      assert metrics.expression_error(d0, d1) < 1e-9


def test_expression_grows_with_mouth_opening(astronaut):
  _, face = astronaut
  lm = face.landmarks68.astype(np.float64)
  eye_px = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
  lower_lip = [55, 56, 57, 58, 59, 65, 66, 67]
  base = pose_lib.expression_descriptor(lm)
  errors = []
  for opening in (0.05, 0.1, 0.2, 0.4):  # Fractions of the eye distance.
    moved = lm.copy()
    moved[lower_lip, 1] += opening * eye_px
    errors.append(metrics.expression_error(base, pose_lib.expression_descriptor(moved)))
  assert errors[0] > 0.01
  assert np.all(np.diff(errors) > 0), errors
  # Roughly linear: about the displacement's norm in eye-distance units (8 points).
  assert errors[-1] == pytest.approx(0.4 * np.sqrt(8), rel=0.3)
  # Batch helper = singles.
  batch = pose_lib.expression_descriptor_batch(np.stack([lm, moved]))
  np.testing.assert_allclose(batch[1], pose_lib.expression_descriptor(moved))


# -------------------------------------------------------------------------- recognizer
def test_recognizer_descriptor_on_astronaut(recognizer, astronaut):
  image, face = astronaut
  d = recognizer.describe(image, face)
  assert d.shape == (128,) and d.dtype == np.float32
  assert np.linalg.norm(d) == pytest.approx(1.0, abs=1e-5)
  np.testing.assert_allclose(recognizer.describe(image, face.landmarks68), d, atol=1e-6)
  np.testing.assert_allclose(recognizer.describe_batch([image], [face])[0], d, atol=1e-6)
  np.testing.assert_allclose(recognizer.describe_faces(image, [face, face]), [d, d],
                             atol=1e-6)
  np.testing.assert_allclose(recognizer.describe_image(image), d, atol=1e-6)


SAME_PERSON = [('obama.jpg', 'obama3.jpg'), ('biden.jpg', 'train_biden_biden2.jpg'),
               ('train_rose_leslie_img1.jpg', 'train_rose_leslie_img2.jpg')]


def test_recognizer_on_real_photos(faces_dir, detector, recognizer):
  files = [f for pair in SAME_PERSON for f in pair]
  images = [image_io.load_rgb(os.path.join(faces_dir, f)) for f in files]
  faces = [detector.detect(im)[0] for im in images]
  emb = recognizer.describe_batch(images, faces)
  flipped = [im[:, ::-1].copy() for im in images[::2]]
  emb_flip = np.stack([recognizer.describe_image(im) for im in flipped])
  sims = emb @ emb.T
  people = np.repeat(np.arange(len(SAME_PERSON)), 2)
  for i, j in enumerate(range(0, len(files), 2)):
    flip_cos = float(emb_flip[i] @ emb[j])
    other = sims[j][people != people[j]].max()
    assert flip_cos > other, (files[j], flip_cos, other)
  # Leave-one-out retrieval: each photo finds the other photo of the same person.
  gallery, queries = emb[1::2], emb[0::2]
  assert metrics.id_retrieval(queries, gallery, np.arange(len(SAME_PERSON)),
                              ks=(1,))[1] == 1.0
