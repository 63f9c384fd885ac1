"""Writes the synthetic-faces contact sheet: rows = identities, columns = attributes.

  python -m fsjax.data.contact_sheet [--out docs/synthetic_faces_contact_sheet.png]
      [--rows 8] [--cols 8] [--size 96] [--seed 0]

Every row shares one identity and every column one attribute vector (pose, expression, light,
background, occluder), so identity is read along columns and attributes along rows. The first
eight columns show one attribute each on top of a random scene (see SHOWCASE); further columns
are fully random.
"""

import argparse
import os

import numpy as np
from PIL import Image

from fsjax.data import synthetic_faces

_FRONT = dict(yaw=0.0, pitch=0.0, roll=0.0, mouth_open=0.0, smile=0.2, blink=0.0, occluder=0,
              gaze_x=0.0, gaze_y=0.0)
# Column themes: attribute overrides applied to each column's random draw.
SHOWCASE = (
    dict(_FRONT),                                      # frontal, neutral
    dict(_FRONT, yaw=-0.55),                           # turned left
    dict(_FRONT, yaw=0.5, smile=1.0),                  # turned right, smiling
    dict(_FRONT, pitch=-0.3, mouth_open=1.0),          # looking up, mouth open
    dict(_FRONT, roll=0.25, blink=1.0),                # head tilt, eyes closed
    dict(_FRONT, yaw=0.25, occluder=1),                # glasses
    dict(_FRONT, yaw=-0.2, occluder=2, occ_x=-0.2, occ_y=0.45),  # hand
    dict(_FRONT, pitch=0.25, light_strength=0.7, light_x=0.9, light_y=-0.3),  # side light
)


def contact_sheet(rows: int = 8, cols: int = 8, size: int = 96, seed: int = 0,
                  pad: int = 2) -> np.ndarray:
  """Returns a uint8 [rows*(size+pad)+pad, cols*(size+pad)+pad, 3] grid of rendered faces."""
  ids = np.stack([synthetic_faces.sample_identity(synthetic_faces.identity_rng(seed, 'sheet', r))
                  for r in range(rows)])
  atts = []
  for c in range(cols):
    att = synthetic_faces.sample_attributes(synthetic_faces.attribute_rng(seed, 'sheet', 0, c))
    if c < len(SHOWCASE):
      att = synthetic_faces.replace_fields(att, synthetic_faces.ATTRIBUTE_FIELDS, **SHOWCASE[c])
    atts.append(att)
  atts = np.stack(atts)
  id_b = np.repeat(ids, cols, axis=0)
  att_b = np.tile(atts, (rows, 1))
  images = synthetic_faces.render_batch(id_b, att_b, size)
  sheet = np.full((rows * (size + pad) + pad, cols * (size + pad) + pad, 3), 255, np.uint8)
  for i, img in enumerate(images):
    r, c = divmod(i, cols)
    y, x = pad + r * (size + pad), pad + c * (size + pad)
    sheet[y:y + size, x:x + size] = img
  return sheet


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default='docs/synthetic_faces_contact_sheet.png')
  parser.add_argument('--rows', type=int, default=8)
  parser.add_argument('--cols', type=int, default=8)
  parser.add_argument('--size', type=int, default=96)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  sheet = contact_sheet(args.rows, args.cols, args.size, args.seed)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  Image.fromarray(sheet).save(args.out, optimize=True)
  print(f'wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})')


if __name__ == '__main__':
  main()
