"""How much of a synthetic face's identity an identity encoder holds linearly (issue 19).

  python scripts/identity_probe.py ENCODER [ENCODER...] [--num_pairs 1000]
      [--pairs synthetic_faces/pairs64] [--data_dir D] [--alpha 1.0] [--json out.json]

ENCODER is an identity checkpoint dir (identity.json) or a workdir holding one in identity/.
The sources X_s of the first N test pairs (identities never seen in training) are embedded as
AEI-Net embeds them (the 64 px image resized to 112, unit embedding, no flip); a ridge
regression (alpha on the unit embedding, targets standardised) from z_id to each of the 44
identity parameters of `synthetic_faces` is fitted on the sources of half the test identities
(by label) and scored on the other half: R^2 per parameter, and its mean per group of
parameters (face shape, skin, eyes, iris, brows, nose, mouth, ears and beard, marks). A field
the encoder does not hold linearly scores R^2 <= 0; the generator gets only what z_id holds.
"""

import argparse
import json
import os
import sys

import numpy as np

GROUPS = (
    ('shape', ('face_width', 'face_height', 'jaw_taper', 'chin_power', 'face_depth')),
    ('skin', ('skin_r', 'skin_g', 'skin_b')),
    ('eyes', ('eye_size', 'eye_spacing', 'eye_height', 'eye_aspect', 'eye_tilt')),
    ('iris', ('iris_r', 'iris_g', 'iris_b', 'iris_size')),
    ('brows', ('brow_thickness', 'brow_angle', 'brow_height', 'brow_length', 'brow_arch',
               'brow_r', 'brow_g', 'brow_b')),
    ('nose', ('nose_length', 'nose_width', 'nose_flare')),
    ('mouth', ('mouth_gap', 'lip_width', 'lip_upper', 'lip_lower', 'lip_r', 'lip_g', 'lip_b')),
    ('ears, beard', ('ear_size', 'beard')),
    ('marks', ('mark1_x', 'mark1_y', 'mark1_size', 'mark2_x', 'mark2_y', 'mark2_size',
               'mark2_angle')),
)


def ridge_r2(z_fit, y_fit, z_test, y_test, alpha):
  """R^2 float [P] on (z_test, y_test) of a ridge regression (with intercept) fitted on
  (z_fit [N, D], y_fit [N, P]); targets standardised by the fit set."""
  mz, my, sy = z_fit.mean(0), y_fit.mean(0), y_fit.std(0) + 1e-12
  a, b = z_fit - mz, (y_fit - my) / sy
  w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ b)
  pred = (z_test - mz) @ w * sy + my
  res = ((y_test - pred) ** 2).sum(0)
  tot = ((y_test - y_test.mean(0)) ** 2).sum(0) + 1e-12
  return 1.0 - res / tot


def probe(encoder_dir, pairs, alpha):
  """{'fields': {name: R^2}, 'groups': {group: mean R^2}, 'mean': float}."""
  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  from fsjax.eval import recognizers  # pylint: disable=g-import-not-at-top
  # Unit z_id of the sources as AEI-Net computes it (synthetic faces are ffhq-aligned).
  embed = recognizers.crop_embedder(encoder_dir, 'resize')
  z = np.asarray(embed(pairs['source']), np.float64)
  y = pairs['identity_params'].astype(np.float64)
  labels = pairs['source_label']
  fit = np.isin(labels, np.unique(labels)[::2])  # half the identities, the rest unseen
  r2 = ridge_r2(z[fit], y[fit], z[~fit], y[~fit], alpha)
  fields = dict(zip(synthetic_faces.IDENTITY_FIELDS, map(float, r2)))
  groups = {g: float(np.mean([fields[k] for k in names])) for g, names in GROUPS}
  return {'fields': fields, 'groups': groups, 'mean': float(np.mean(r2)),
          'fit_pairs': int(fit.sum()), 'test_pairs': int((~fit).sum())}


def resolve(path):
  if os.path.isfile(os.path.join(path, 'identity.json')):
    return path
  inner = os.path.join(path, 'identity')
  if os.path.isfile(os.path.join(inner, 'identity.json')):
    return inner
  raise FileNotFoundError(f'{path}: no identity.json here or in {inner}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('encoders', nargs='+')
  parser.add_argument('--num_pairs', type=int, default=1000)
  parser.add_argument('--pairs', default='synthetic_faces/pairs64')
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--alpha', type=float, default=1.0)
  parser.add_argument('--json', default='')
  args = parser.parse_args(argv)
  try:
    encoders = [resolve(p) for p in args.encoders]
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  from fsjax.eval import synthetic  # pylint: disable=g-import-not-at-top
  pairs = synthetic.load_pairs(args.pairs, args.data_dir, 'test', args.num_pairs)
  results = {}
  for path, name in zip(encoders, args.encoders):
    res = probe(path, pairs, args.alpha)
    results[name] = res
    groups = '  '.join(f'{g} {v:.2f}' for g, v in res['groups'].items())
    print(f'{name}: R^2 mean {res["mean"]:.3f} ({res["fit_pairs"]} fit / {res["test_pairs"]} '
          f'test sources)  {groups}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
