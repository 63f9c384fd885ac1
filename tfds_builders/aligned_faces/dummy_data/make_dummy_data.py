"""Regenerates the aligned_faces dummy data (run from the repo root; output < 300 KB).

  python tfds_builders/aligned_faces/dummy_data/make_dummy_data.py

Faces are crops of skimage.data.astronaut() (public domain) and fsjax synthetic faces (which
dlib detects when frontal). Next to the good files it writes every kind of bad file the
builder must survive: zero-byte, truncated JPEG/PNG, non-image with an image name, a PNG
whose header claims 30000x30000 pixels, CMYK JPEG, 16-bit PNG, grayscale, RGBA, a large
(2400x1800) photo, a photo without a face, a non-square "aligned" image and a text file.
"""

import os
import struct
import zlib

import cv2
import numpy as np
from PIL import Image
import skimage.data

from fsjax.data import synthetic_faces as sf
from fsjax.faces import align as align_lib

HERE = os.path.dirname(os.path.abspath(__file__))


def _save(rel, image, **kwargs):
  path = os.path.join(HERE, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if isinstance(image, bytes):
    with open(path, 'wb') as f:
      f.write(image)
  else:
    image.save(path, **kwargs)
  return path


def _astronaut(flip=False, shift=0, gain=1.0, size=112):
  """A head-and-shoulders crop of the astronaut (face ~ 0.45 of the width)."""
  img = skimage.data.astronaut()[20 + shift:220 + shift, 120:320]
  img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
  if flip:
    img = img[:, ::-1]
  return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_AREA)


def _synthetic(identity_index, attribute_index, size=112):
  ident = sf.sample_identity(sf.identity_rng(0, 'dummy', identity_index))
  att = sf.replace_fields(
      sf.sample_attributes(sf.attribute_rng(0, 'dummy', identity_index, attribute_index)),
      sf.ATTRIBUTE_FIELDS, yaw=0.0, pitch=0.0, roll=0.0, occluder=0, blink=0.0, mouth_open=0.0,
      bg_pattern=0.0)
  return sf.render(ident, att, size)


def _save_jpeg(rel, image, quality=85):
  return _save(rel, Image.fromarray(image), format='JPEG', quality=quality)


def _huge_png_header(width=30000, height=30000):
  """A valid PNG signature + IHDR for width x height RGB, then a short IDAT: tiny file,
  decompression-bomb-sized image."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) +
          chunk(b'IDAT', zlib.compress(b'\0' * 1000)) + chunk(b'IEND', b''))


def _large_photo():
  canvas = np.full((1800, 2400, 3), (120, 140, 160), np.uint8)
  face = cv2.resize(_astronaut(), (560, 560), interpolation=cv2.INTER_CUBIC)
  canvas[600:1160, 900:1460] = face
  return canvas


def main():
  astro = _astronaut()
  # folder/ (also read by folder_all_faces): identities alice (astronaut) and bob (synthetic).
  for config in ('folder',):
    _save_jpeg(f'{config}/alice/astronaut.jpg', astro)
    _save(f'{config}/alice/astronaut_gray.png', Image.fromarray(astro).convert('L'))
    _save(f'{config}/alice/astronaut_cmyk.jpg', Image.fromarray(astro).convert('CMYK'),
          format='JPEG', quality=80)
    rgba = np.dstack([astro, np.full(astro.shape[:2], 255, np.uint8)])
    rgba[:20, :, 3] = 0  # a transparent band at the top
    _save(f'{config}/alice/astronaut_rgba.png', Image.fromarray(rgba, 'RGBA'))
    gray16 = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    cv2.imwrite(os.path.join(HERE, f'{config}/alice/astronaut_16bit.png'), gray16)
    _save_jpeg(f'{config}/alice/astronaut_large.jpg', _large_photo(), quality=30)
    _save(f'{config}/bob/synthetic_0.png', Image.fromarray(_synthetic(6, 0)))
    _save(f'{config}/bob/synthetic_1.png', Image.fromarray(_synthetic(6, 1)))
    # Photos directly in the folder: no identity (label -1). A group photo with two faces.
    group = np.concatenate([_astronaut(), _astronaut(flip=True, gain=0.9)], axis=1)
    _save_jpeg(f'{config}/group.jpg', group)
    good_jpeg = open(os.path.join(HERE, f'{config}/alice/astronaut.jpg'), 'rb').read()
    _save(f'{config}/empty.jpg', b'')
    _save(f'{config}/truncated.jpg', good_jpeg[:len(good_jpeg) // 3])
    _save(f'{config}/not_an_image.png', b'this is a text file with an image name\n' * 4)
    _save(f'{config}/huge.png', _huge_png_header())
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), (96, 96))
    _save(f'{config}/no_face.png', Image.fromarray(texture))
    _save(f'{config}/notes.txt', b'not an image, ignored\n')

  # ffhq/: already aligned (FFHQ recipe from the detected landmarks of the astronaut).
  from fsjax.faces import DlibDetector  # pylint: disable=g-import-not-at-top
  photo = skimage.data.astronaut()
  face = DlibDetector(use_cnn=False).detect(photo)[0]
  aligned, _ = align_lib.align_ffhq(photo, face.landmarks68, 64)
  _save('ffhq/00000/00000.png', Image.fromarray(aligned))
  _save('ffhq/00000/00001.png', Image.fromarray(aligned[:, ::-1]))
  _save('ffhq/00000/00002.png', Image.fromarray(_synthetic(3, 0, 64)))
  _save('ffhq/00000/wide.png', Image.fromarray(cv2.resize(aligned, (64, 48))))
  png = open(os.path.join(HERE, 'ffhq/00000/00000.png'), 'rb').read()
  _save('ffhq/00000/truncated.png', png[:len(png) // 2])

  # celeba_hq/: three aligned images and the identity mapping files (0 and 2 share one).
  for i, img in enumerate([aligned, _synthetic(4, 0, 64), aligned[:, ::-1]]):
    _save_jpeg(f'celeba_hq/{i}.jpg', img)
  _save('celeba_hq/CelebA-HQ-to-CelebA-mapping.txt',
        b'idx\torig_idx\torig_file\n0\t99\t000100.jpg\n1\t199\t000200.jpg\n'
        b'2\t299\t000300.jpg\n')
  _save('celeba_hq/identity_CelebA.txt', b'000100.jpg 7\n000200.jpg 9\n000300.jpg 7\n')

  # vggface2/: train and test trees with disjoint identities.
  _save_jpeg('vggface2/train/n000001/0001_01.jpg', astro)
  _save_jpeg('vggface2/train/n000001/0002_01.jpg', _astronaut(flip=True, shift=8))
  _save('vggface2/train/n000002/0001_01.png', Image.fromarray(_synthetic(6, 2)))
  _save('vggface2/test/n000003/0001_01.png', Image.fromarray(_synthetic(7, 0)))
  _save('vggface2/test/n000003/0002_01.jpg', b'')

  # arcface112/: identity-per-sub-folder tree.
  _save_jpeg('arcface112/id_a/1.jpg', astro)
  _save_jpeg('arcface112/id_a/2.jpg', _astronaut(shift=10, gain=1.1))
  _save('arcface112/id_b/1.png', Image.fromarray(_synthetic(6, 1)))

  total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(HERE) for f in fs)
  print(f'dummy data: {total / 1024:.0f} KB')


if __name__ == '__main__':
  main()
