"""Tests of fsjax.data.image_io, fsjax.faces (detection, alignment) and `fsjax align`.

Real photos: the folder named by FSJAX_TEST_FACES (labels.csv gives the face counts);
those tests skip when it is unset. skimage.data.astronaut() is always used.

About "landmarks land on the template within 2 px at 112": the 5-point similarity fit
leaves a residual that belongs to the face, not to the alignment (head pose, expression,
and dlib's mouth corners sitting ~2.5 px wider than InsightFace's): on the test photos
the worst point is 2-10 px from the template after the exact least-squares fit. So the
2 px checks are (a) exact recovery of a template-shaped face under any similarity,
(b) the fit equals an independent least-squares solver, and (c) the crop agrees with M:
landmarks re-predicted in the aligned crop lie within 2 px (at 112 scale) of where M puts
the source landmarks. The template residual itself is bounded loosely (RMS <= 6 px) to
catch wrong point order or a wrong template.
"""

import csv
import io
import json
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
from PIL import Image
import pytest
from skimage import data as skdata
from skimage import transform as sktransform

from fsjax.data import image_io
from fsjax.faces import align as align_lib
from fsjax.faces import align_images
from fsjax.faces import detect as detect_lib

TOL_112 = 2.0  # px at 112 scale.
MAX_TEMPLATE_RMS_112 = 6.0


@pytest.fixture(scope='module')
def detector():
  return detect_lib.DlibDetector()


@pytest.fixture(scope='module')
def astronaut(detector):
  image = skdata.astronaut()
  return image, detector.detect(image)


def _skimage_similarity(src, dst):
  """[2, 3] least-squares similarity from scikit-image (an independent Umeyama)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  if hasattr(sktransform.SimilarityTransform, 'from_estimate'):
    return sktransform.SimilarityTransform.from_estimate(src, dst).params[:2]
  reference = sktransform.SimilarityTransform()
  reference.estimate(src, dst)
  return reference.params[:2]


def _crop_landmark_error(detector, image, face, size=256):
  """Max distance (112 px) between landmarks re-predicted in the arcface crop and M(lm5)."""
  crop, m = align_lib.align_arcface(image, face.landmarks5, size)
  x0, y0, x1, y1 = face.box
  corners = align_lib.transform_points(m, [[x0, y0], [x1, y0], [x0, y1], [x1, y1]])
  box = (*corners.min(axis=0), *corners.max(axis=0))
  again = detect_lib.landmarks5_from_68(detector.landmarks68(crop, box))
  want = align_lib.transform_points(m, face.landmarks5)
  return float(np.linalg.norm(again - want, axis=1).max() * 112 / size)


def _template_residual(face):
  """(max, rms) distance at 112 between M(lm5) and the template."""
  _, m = align_lib.align_arcface(np.zeros((8, 8, 3), np.uint8), face.landmarks5, 112)
  d = np.linalg.norm(align_lib.transform_points(m, face.landmarks5)
                     - align_lib.ARCFACE_TEMPLATE_112, axis=1)
  return float(d.max()), float(np.sqrt((d ** 2).mean()))


def _check_alignment(detector, image, face):
  """Problems with one face's alignment ([] when fine), plus (template max, crop error)."""
  problems = []
  lm = face.landmarks5
  if not (lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and lm[:2, 1].max() < lm[2, 1] <
          lm[3:, 1].min()):
    problems.append(f'landmarks5 out of order: {lm.tolist()}')
  m_ours = align_lib.similarity_transform(lm, align_lib.ARCFACE_TEMPLATE_112)
  reference = _skimage_similarity(lm, align_lib.ARCFACE_TEMPLATE_112)
  if not np.allclose(m_ours, reference, atol=1e-4):
    problems.append('fit differs from skimage SimilarityTransform')
  worst, rms = _template_residual(face)
  if rms > MAX_TEMPLATE_RMS_112:
    problems.append(f'template RMS residual {rms:.2f} px > {MAX_TEMPLATE_RMS_112}')
  crop_error = _crop_landmark_error(detector, image, face)
  if crop_error > TOL_112:
    problems.append(f'crop landmarks {crop_error:.2f} px from M(lm5) (> {TOL_112})')
  return problems, worst, crop_error


# ---------------------------------------------------------------------------- image_io


def _png_bytes(array, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG', **kwargs)
  return buf.getvalue()


def test_load_rgb_converts_modes(tmp_path):
  rng = np.random.RandomState(0)
  rgb = rng.randint(0, 256, (20, 30, 3)).astype(np.uint8)
  np.testing.assert_array_equal(image_io.load_rgb(_png_bytes(rgb)), rgb)
  # Grayscale.
  gray = image_io.load_rgb(_png_bytes(rgb[..., 0]))
  assert gray.shape == (20, 30, 3) and (gray == rgb[..., :1]).all()
  # RGBA over white: opaque pixels unchanged, transparent ones white.
  alpha = np.full((20, 30), 255, np.uint8)
  alpha[:, :10] = 0
  rgba = image_io.load_rgb(_png_bytes(np.dstack([rgb, alpha])))
  np.testing.assert_array_equal(rgba[:, 10:], rgb[:, 10:])
  assert (rgba[:, :10] == 255).all()
  # CMYK JPEG.
  path = tmp_path / 'cmyk.jpg'
  Image.fromarray(rgb).convert('CMYK').save(path, quality=100)
  assert Image.open(path).mode == 'CMYK'
  assert np.abs(image_io.load_rgb(path).astype(int) - rgb).mean() < 8
  # 16-bit grayscale and RGB PNG (cv2 writes BGR).
  cv2.imwrite(str(tmp_path / 'g16.png'), rgb[..., 0].astype(np.uint16) * 256 + 200)
  np.testing.assert_array_equal(image_io.load_rgb(tmp_path / 'g16.png')[..., 1], rgb[..., 0])
  cv2.imwrite(str(tmp_path / 'c16.png'), rgb[..., ::-1].astype(np.uint16) * 256 + 200)
  np.testing.assert_array_equal(image_io.load_rgb(tmp_path / 'c16.png'), rgb)
  # EXIF orientation 6 (rotate 90 degrees clockwise to view).
  im = Image.fromarray(rgb)
  exif = im.getexif()
  exif[0x0112] = 6
  im.save(tmp_path / 'rot.png', exif=exif)
  np.testing.assert_array_equal(image_io.load_rgb(tmp_path / 'rot.png'), np.rot90(rgb, -1))
  # Palette.
  pal = Image.fromarray(rgb).convert('P')
  buf = io.BytesIO()
  pal.save(buf, format='PNG')
  np.testing.assert_array_equal(image_io.load_rgb(buf.getvalue()), np.asarray(pal.convert('RGB')))


def test_load_rgb_rejects_bad_files(tmp_path):
  rgb = np.random.RandomState(1).randint(0, 256, (64, 64, 3)).astype(np.uint8)
  good = tmp_path / 'good.jpg'
  Image.fromarray(rgb).save(good)
  (tmp_path / 'zero.jpg').write_bytes(b'')
  (tmp_path / 'trunc.jpg').write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
  (tmp_path / 'text.jpg').write_text('not a picture')
  for name, reason in (('zero.jpg', image_io.EMPTY), ('trunc.jpg', image_io.TRUNCATED),
                       ('text.jpg', image_io.NOT_AN_IMAGE)):
    with pytest.raises(ValueError, match=reason) as info:
      image_io.load_rgb(tmp_path / name)
    assert image_io.error_reason(info.value) == reason
    assert name in str(info.value)
  with pytest.raises(ValueError, match=image_io.TOO_LARGE):
    image_io.load_rgb(good, max_pixels=1000)
  with pytest.raises(FileNotFoundError) as info:
    image_io.load_rgb(tmp_path / 'missing.jpg')
  assert image_io.error_reason(info.value) == 'missing file'


# ---------------------------------------------------------------------------- geometry


def _random_similarity(rng, scale):
  angle = rng.uniform(-0.6, 0.6)
  r = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  return np.hstack([r, rng.uniform(-50, 300, (2, 1))])


def test_similarity_transform_exact_and_least_squares():
  rng = np.random.RandomState(0)
  template = align_lib.ARCFACE_TEMPLATE_112
  for scale in (0.3, 1.0, 4.0):
    # A template-shaped face under any similarity lands exactly on the template.
    source = align_lib.transform_points(align_lib.invert_affine(_random_similarity(rng, scale)),
                                        template)
    m = align_lib.similarity_transform(source, template)
    assert np.abs(align_lib.transform_points(m, source) - template).max() < 1e-3
    # Noisy points: same answer as an independent least-squares solver.
    noisy = source + rng.normal(0, 3, source.shape)
    np.testing.assert_allclose(align_lib.similarity_transform(noisy, template),
                               _skimage_similarity(noisy, template), atol=1e-6)
  # A mirrored face is not fitted with a reflection.
  m = align_lib.similarity_transform(template * [-1, 1], template)
  assert np.linalg.det(m[:, :2]) > 0
  # invert / compose / transform round trip.
  m = _random_similarity(rng, 2.0)
  back = align_lib.compose_affine(align_lib.invert_affine(m), m)
  np.testing.assert_allclose(back, [[1, 0, 0], [0, 1, 0]], atol=1e-5)


def test_arcface_template_matches_identity_crop():
  np.testing.assert_array_equal(align_lib.arcface_template(112), align_lib.ARCFACE_TEMPLATE_112)
  p = align_lib.ARCFACE_TEMPLATE_112.astype(np.float64)
  for size in (128, 256, 512):
    t = align_lib.arcface_template(size)
    nominal = p * (218 / 112) * (size / 256) + 19 * size / 256
    # 217/111 vs 218/112 (<= 0.8 px at 256) plus the pixel-centre term 0.5 * |S / 256 - 1|.
    assert np.abs(t - nominal).max() <= 0.8 * size / 256 + 0.5 * abs(size / 256 - 1) + 1e-3
  # identity_crop(x, 'crop_19_237') reads the template back exactly at every size.
  arcface = pytest.importorskip('fsjax.models.arcface')
  for size in (128, 256, 512):
    coords = arcface.crop_coordinates(size, 'crop_19_237', 112)
    read = np.interp(p, np.arange(112), coords)  # Sample position of output index p.
    np.testing.assert_allclose(read, align_lib.arcface_template(size), atol=1e-4)


@pytest.mark.parametrize('scale', [0.15, 0.6, 1.0, 2.5])
def test_warp_affine_puts_pixels_where_m_says(scale):
  rng = np.random.RandomState(int(scale * 100))
  size = 96
  height, width = 700, 900
  image = np.zeros((height, width, 3), np.uint8)
  m = _random_similarity(rng, scale)
  # A dot drawn (in the source) at the source position of the crop centre region.
  target = np.array([[40.0, 55.0]])
  source_pt = align_lib.transform_points(align_lib.invert_affine(m), target)[0]
  if not (20 < source_pt[0] < width - 20 and 20 < source_pt[1] < height - 20):
    shift = np.array([width / 2, height / 2]) - source_pt
    m = align_lib.compose_affine(m, np.array([[1, 0, -shift[0]], [0, 1, -shift[1]]]))
    source_pt = source_pt + shift
  radius = max(2.0, 3.0 / scale)
  cv2.circle(image, (int(round(source_pt[0] * 16)), int(round(source_pt[1] * 16))),
             int(radius * 16), (255, 255, 255), -1, lineType=cv2.LINE_AA, shift=4)
  crop = align_lib.warp_affine(image, m, size)
  weight = crop[..., 0].astype(np.float64)
  yy, xx = np.mgrid[:size, :size]
  centroid = np.array([(weight * xx).sum(), (weight * yy).sum()]) / weight.sum()
  assert np.linalg.norm(centroid - target[0]) < 0.5
  if scale >= 0.75:  # No anti-aliasing: same as a plain warp of the whole image.
    plain = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR)
    assert np.abs(plain.astype(int) - crop).max() <= 1


def test_warp_affine_reflect_border_matches_full_image_warp():
  rng = np.random.RandomState(3)
  image = rng.randint(0, 256, (200, 300, 3)).astype(np.uint8)
  m = np.array([[1.1, 0.2, 60.0], [-0.2, 1.1, 80.0]])  # Crop reaches past the top-left.
  crop = align_lib.warp_affine(image, m, 128, border='reflect')
  plain = cv2.warpAffine(image, m, (128, 128), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
  assert np.abs(plain.astype(int) - crop).max() <= 1
  black = align_lib.warp_affine(image, m, 128, border='constant')
  assert (black[:5, :5] == 0).all()


# ---------------------------------------------------------------------------- astronaut


def test_astronaut_one_face_arcface_alignment(detector, astronaut):
  image, faces = astronaut
  assert len(faces) == 1
  face = faces[0]
  assert isinstance(detector, detect_lib.FaceDetector)
  clone = pickle.loads(pickle.dumps(detector))  # Settings only; models reload lazily.
  assert clone.hog_max_side == detector.hog_max_side and clone._shape68 is None  # pylint: disable=protected-access
  assert face.landmarks68.shape == (68, 2) and face.landmarks68.dtype == np.float32
  assert face.landmarks5.shape == (5, 2) and face.landmarks5.dtype == np.float32
  x0, y0, x1, y1 = face.box
  assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # The face, not the mission patch.
  problems, _, _ = _check_alignment(detector, image, face)
  assert not problems, problems
  crop, m = align_lib.align_face(image, face, 'arcface', 112)
  assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
  assert m.shape == (2, 3) and m.dtype == np.float32
  # The 256 crop holds the 112 alignment at rows/cols 19:237 (0.85 scale).
  _, m256 = align_lib.align_face(image, face, 'arcface', 256)
  lm112 = align_lib.transform_points(m, face.landmarks5)
  lm256 = align_lib.transform_points(m256, face.landmarks5)
  np.testing.assert_allclose(lm256, 19 + lm112 * 217 / 111, atol=0.01)


def test_astronaut_ffhq_crop_is_sane(detector, astronaut):
  image, faces = astronaut
  face = faces[0]
  for size in (128, 256):
    crop, m = align_lib.align_face(image, face, 'ffhq', size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert crop.std() > 20  # A photo, not a flat fill.
    lm = align_lib.transform_points(m, face.landmarks68)
    eye_l, eye_r = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    mouth = 0.5 * (lm[48] + lm[54])
    eyes = eye_r - eye_l
    assert abs(np.degrees(np.arctan2(eyes[1], eyes[0]))) < 3.0  # Eyes level.
    assert 0.15 * size < np.hypot(*eyes) <= 0.25 * size + 0.01  # FFHQ: quad >= 4 eye gaps.
    centre = (size - 1) / 2
    assert abs(0.5 * (eye_l[0] + eye_r[0]) - centre) < 0.03 * size  # Centred (upright face).
    assert 0.3 * size < eye_l[1] < centre < mouth[1] < 0.85 * size
    # The crop agrees with M: landmarks re-predicted in it are where M says.
    again = detector.landmarks68(crop, (0.15 * size, 0.2 * size, 0.85 * size, 0.9 * size))
    assert np.linalg.norm(again - lm, axis=1).mean() * 112 / size < TOL_112


def test_rolled_face_found_by_cnn_with_upright_landmarks(detector, astronaut):
  """HOG misses a face rolled by 75 degrees; the CNN finds it, landmarks stay accurate."""
  image, faces = astronaut
  patch = np.ascontiguousarray(image[:320, 80:400])
  want = faces[0].landmarks5 - [80, 0]
  m = cv2.getRotationMatrix2D((160.0, 160.0), 75.0, 1.0)
  rolled = cv2.warpAffine(patch, m, (320, 320), borderMode=cv2.BORDER_REFLECT_101)
  assert not detector._hog_boxes(rolled)  # pylint: disable=protected-access
  found = detector.detect(rolled)
  assert len(found) == 1 and found[0].detector == 'cnn'
  error = np.linalg.norm(found[0].landmarks5 - align_lib.transform_points(m, want), axis=1)
  assert error.max() < 2.0, error
  crop, m_crop = align_lib.align_face(rolled, found[0], 'arcface', 112)
  lm = align_lib.transform_points(m_crop, found[0].landmarks5)
  assert abs(lm[1, 1] - lm[0, 1]) < 3.0 and lm[0, 0] < lm[1, 0]  # Upright again.
  assert crop.std() > 20


# ---------------------------------------------------------------------------- real photos


def test_real_photos_detected_and_aligned(detector, faces_dir):
  with open(os.path.join(faces_dir, 'labels.csv')) as f:
    labels = list(csv.DictReader(f))
  assert labels
  problems, lines = [], []
  for row in labels:
    image = image_io.load_rgb(os.path.join(faces_dir, row['file']))
    faces = detector.detect(image)
    if len(faces) != int(row['faces']):
      problems.append(f"{row['file']}: found {len(faces)} faces, expected {row['faces']}")
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True)
    worst_template = worst_crop = 0.0
    for face in faces:
      face_problems, template, crop_error = _check_alignment(detector, image, face)
      problems += [f"{row['file']}: {p}" for p in face_problems]
      worst_template, worst_crop = max(worst_template, template), max(worst_crop, crop_error)
    lines.append(f"{row['file']}: {len(faces)}/{row['faces']} faces "
                 f"({','.join(face.detector for face in faces)}), template max "
                 f'{worst_template:.2f} px, crop {worst_crop:.2f} px')
  print('\n'.join(lines))
  assert not problems, '\n'.join(problems)


# ---------------------------------------------------------------------------- fsjax align


def _make_inputs(folder):
  folder.mkdir()
  Image.fromarray(skdata.astronaut()).save(folder / 'astronaut.jpg', quality=95)
  (folder / 'broken.jpg').write_bytes(b'')
  Image.fromarray(np.full((150, 200, 3), 128, np.uint8)).save(folder / 'grey.png')
  (folder / 'notes.txt').write_text('not an image name: ignored in folders')
  return folder


def test_align_paths_writes_crops_and_report(tmp_path, detector, astronaut):
  inputs = _make_inputs(tmp_path / 'in')
  out = tmp_path / 'out'
  report = align_images.align_paths([str(inputs)], str(out), mode='arcface', size=128,
                                    detector=detector)
  assert report.exit_code == 0 and report.faces_aligned == 1 and report.images == 3
  assert report.ignored == 1
  reasons = {os.path.basename(s): r for s, r, _ in report.failures}
  assert reasons == {'broken.jpg': image_io.EMPTY, 'grey.png': align_images.NO_FACE}
  assert 'broken.jpg: empty file' in report.summary()
  crop = image_io.load_rgb(out / 'astronaut.png')
  assert crop.shape == (128, 128, 3)
  doc = json.loads((out / 'landmarks.json').read_text())
  assert doc['mode'] == 'arcface' and doc['size'] == 128
  record = doc['files']['astronaut.png']
  assert record['source'] == str(inputs / 'astronaut.jpg')
  lm5 = np.array(record['landmarks5'])
  faces = detector.detect(image_io.load_rgb(inputs / 'astronaut.jpg'))
  np.testing.assert_allclose(lm5, faces[0].landmarks5, atol=0.01)
  np.testing.assert_allclose(lm5, astronaut[1][0].landmarks5, atol=2)  # JPEG vs original.
  assert np.array(record['landmarks68']).shape == (68, 2) and len(record['box']) == 4
  m = np.array(record['affine'])
  np.testing.assert_allclose(align_lib.transform_points(m, lm5), record['landmarks5_crop'],
                             atol=0.01)
  np.testing.assert_allclose(record['landmarks5_crop'], align_lib.arcface_template(128), atol=8)
  assert {f['reason'] for f in doc['failures']} == {image_io.EMPTY, align_images.NO_FACE}
  # Nothing aligned -> exit code 2; all faces -> numbered files.
  none = align_images.align_paths([str(inputs / 'broken.jpg'), str(inputs / 'missing.jpg')],
                                  str(tmp_path / 'none'), detector=detector)
  assert none.exit_code == 2 and not none.files
  assert {r for _, r, _ in none.failures} == {image_io.EMPTY, 'missing file'}
  every = align_images.align_paths([str(inputs / 'astronaut.jpg')], str(tmp_path / 'all'),
                                   all_faces=True, detector=detector)
  assert list(every.files) == ['astronaut_0.png']


def test_align_command_exit_codes(tmp_path):
  inputs = _make_inputs(tmp_path / 'in')
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  command = [sys.executable, '-m', 'fsjax.main', 'align']
  ok = subprocess.run(command + [str(inputs), '--output', str(tmp_path / 'out'), '--mode',
                                 'ffhq', '--size', '64', '--all-faces'],
                      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert ok.returncode == 0, ok.stdout + ok.stderr
  assert (tmp_path / 'out' / 'astronaut_0.png').exists()
  assert image_io.load_rgb(tmp_path / 'out' / 'astronaut_0.png').shape == (64, 64, 3)
  assert 'broken.jpg: empty file' in ok.stdout and 'grey.png: no face' in ok.stdout
  assert '[3/3]' in ok.stdout  # Progress lines.
  bad = subprocess.run(command + [str(inputs / 'broken.jpg'), '--output', str(tmp_path / 'x')],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
  assert bad.returncode == 2, bad.stdout + bad.stderr
  assert 'aligned 0 face(s)' in bad.stdout
  assert json.loads((tmp_path / 'x' / 'landmarks.json').read_text())['files'] == {}
