"""Fast fidelity check of AEI-Net workdirs on held-out synthetic pairs (issue 19 ablations).

  python scripts/fidelity.py [WORKDIR...] [--num_pairs 300] [--pairs synthetic_faces/pairs64]
      [--data_dir D] [--json out.json] [--grid out.png] [--parameter_oracles]

For each workdir (latest checkpoint, EMA generator, as `fsjax.load_swapper` loads it) and the
first N test pairs (identities never seen in training) it prints:

- swap Y = G(X_t, z_id(X_s)) against the ground-truth swap GT: PSNR / SSIM over the image and
  PSNR inside the inner face (`synthetic_faces.inner_face_mask` of GT > 0.5, with GT's hair on
  the target's head: the face outline minus the front hair, the region a face swap should
  change);
- self-reconstruction R = G(X_t, z_id(X_t)) against X_t (how much the attribute path can
  carry; an upper bound on what the swap can keep from the target);
- the trivial answers "return X_t" / "return X_s" against GT (the floors the targets of
  issue 19 are relative to);
- identity by the training encoder: mean cos(Y, X_s), cos(Y, X_t) and the fraction of pairs
  where Y is closer to X_s than to X_t;
- face colour transfer: the least-squares slope of mean inner-face colour (Y - X_t) on
  (GT - X_t) over pairs, averaged over R, G, B (1: Y takes the source's skin tone as GT does,
  0: Y keeps the target's);
- where Y's error lies (`region_figures`): the share of its squared error and the colour
  slope above in three regions: the inner face; 'changed', the pixels outside it where GT
  differs from X_t (the face outline and ears, which follow the source's head shape, and the
  neck in the source's skin tone; on synthetic_faces 2.0.0 also the hair silhouette and
  hairline, laid out on the source's head there); the rest, which GT shares with X_t;
- oracles (`with_inner_face`): Y and X_t with GT's inner face pasted in, i.e. what a perfect
  inner face would score with Y's / X_t's pixels everywhere else;
- with --parameter_oracles, which of the identity's traits the figures reward
  (`parameter_oracles`): the ground truth re-rendered with one group of identity parameters
  (colours, head shape, eyes, brows, nose, mouth, marks) taken from the source and the rest
  from the target ("X_t + the source's colours"), and the other way round.

PSNR is the mean over pairs of per-pair PSNR (fsjax.eval.metrics). This is the quick
ablation tool; the recorded figures come from `fsjax eval --protocol synthetic`.
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def _load_pairs(name, data_dir, num_pairs):
  from fsjax.eval import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.load_pairs(name, data_dir, 'test', num_pairs)


def _figures(a, b, mask):
  from fsjax.eval import metrics  # pylint: disable=g-import-not-at-top
  return {'psnr': metrics.mean_psnr(metrics.psnr(a, b)),
          'ssim': metrics.mean_ssim(metrics.ssim(a, b)),
          'psnr_face': metrics.mean_psnr(metrics.psnr(a, b, mask=mask))}


def face_colour_transfer(y, xt, gt, mask):
  """Slope of mean inner-face colour (Y - X_t) on (GT - X_t) over pairs, mean over RGB."""
  w = mask[..., None].astype(np.float64)
  mean = lambda v: (v.astype(np.float64) * w).sum((1, 2)) / np.maximum(w.sum((1, 2)), 1)
  d_gt, d_y = mean(gt) - mean(xt), mean(y) - mean(xt)
  return float(np.mean((d_y * d_gt).sum(0) / np.maximum((d_gt * d_gt).sum(0), 1e-9)))


def changed_outside(xt, gt, mask, threshold=8):
  """bool [B, H, W]: outside `mask`, where GT and X_t (uint8 [B, H, W, 3]) differ by more
  than `threshold` grey levels in some channel."""
  diff = np.abs(gt.astype(np.int16) - xt.astype(np.int16)).max(-1) > threshold
  return diff & ~mask


def region_figures(y, xt, gt, mask):
  """{region: {'pixels', 'error_share'[, 'colour']}} for 'face' (mask), 'changed' (GT != X_t
  outside the face, `changed_outside`) and 'unchanged': fraction of pixels, share of Y's
  squared error to GT and, where GT's colour differs from X_t's, the colour slope
  (`face_colour_transfer` over that region)."""
  changed = changed_outside(xt, gt, mask)
  err = ((y.astype(np.float64) - gt) ** 2).sum(-1)
  total = max(err.sum(), 1e-9)
  out = {}
  for name, region in (('face', mask), ('changed', changed), ('unchanged', ~mask & ~changed)):
    out[name] = {'pixels': float(region.mean()), 'error_share': float(err[region].sum() / total)}
    if name != 'unchanged':
      out[name]['colour'] = face_colour_transfer(y, xt, gt, region)
  return out


def with_inner_face(image, gt, mask):
  """image (uint8 [B, H, W, 3]) with GT's pixels inside mask [B, H, W]."""
  return np.where(mask[..., None], gt, image)


IDENTITY_GROUPS = (
    ('colours', ('skin_r', 'skin_g', 'skin_b', 'iris_r', 'iris_g', 'iris_b', 'lip_r', 'lip_g',
                 'lip_b', 'brow_r', 'brow_g', 'brow_b')),
    ('head shape', ('face_width', 'face_height', 'jaw_taper', 'chin_power', 'face_depth',
                    'ear_size')),
    ('eyes', ('eye_size', 'eye_spacing', 'eye_height', 'eye_aspect', 'eye_tilt', 'iris_size')),
    ('brows', ('brow_thickness', 'brow_angle', 'brow_height', 'brow_length', 'brow_arch')),
    ('nose', ('nose_length', 'nose_width', 'nose_flare')),
    ('mouth', ('mouth_gap', 'lip_width', 'lip_upper', 'lip_lower')),
    ('marks, beard', ('beard', 'mark1_x', 'mark1_y', 'mark1_size', 'mark2_x', 'mark2_y',
                      'mark2_size', 'mark2_angle')),
)


def parameter_oracles(pairs, mask):
  """{'target + source GROUP' | 'source + target GROUP': figures} of the ground truth
  re-rendered (target's attributes, hair on the target's head) with one group of identity
  parameters from the source and the others from the target, or the reverse."""
  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  src, tgt = pairs['identity_params'], pairs['target_identity_params']
  size, fields = pairs['swap'].shape[1], synthetic_faces.IDENTITY_FIELDS
  out = {}
  for group, names in IDENTITY_GROUPS:
    cols = [fields.index(k) for k in names]
    for name, base, donor in (('target + source', tgt, src), ('source + target', src, tgt)):
      mixed = base.copy()
      mixed[:, cols] = donor[:, cols]
      images = np.concatenate([
          synthetic_faces.render_batch(mixed[i:i + 64], pairs['attribute_params'][i:i + 64],
                                       size, hair_identity=tgt[i:i + 64])
          for i in range(0, len(mixed), 64)])
      out[f'{name} {group}'] = _figures(images, pairs['swap'], mask)
  return out


def evaluate(workdir, pairs, mask):
  import fsjax  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  swapper = fsjax.load_swapper(workdir)
  xs, xt, gt = pairs['source'], pairs['target'], pairs['swap']
  z_s = swapper.embed_crops(xs)
  z_t = swapper.embed_crops(xt)
  q = lambda y: np.clip(np.rint(y), 0, 255).astype(np.uint8)
  y = q(swapper.generate(xt, z_s))
  r = q(swapper.generate(xt, z_t))
  e_y, e_s, e_t = (swapper.unit_embeddings(v) for v in (y, xs, xt))
  cos_s, cos_t = np.sum(e_y * e_s, -1), np.sum(e_y * e_t, -1)
  regions = region_figures(y, xt, gt, mask)
  out = {'swap': _figures(y, gt, mask), 'self_rec': _figures(r, xt, mask),
         'cos_source': float(cos_s.mean()), 'cos_target': float(cos_t.mean()),
         'closer_to_source': float((cos_s > cos_t).mean()),
         'face_colour_transfer': regions['face']['colour'], 'regions': regions,
         'oracle_gt_inner_face': _figures(with_inner_face(y, gt, mask), gt, mask),
         'seconds': time.time() - t0}
  return out, y, r


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('workdirs', nargs='*')
  parser.add_argument('--num_pairs', type=int, default=300)
  parser.add_argument('--pairs', default='synthetic_faces/pairs64')
  parser.add_argument('--data_dir', default='')
  parser.add_argument('--json', default='')
  parser.add_argument('--grid', default='', help='PNG: X_s | X_t | Y | GT | R rows (first workdir)')
  parser.add_argument('--parameter_oracles', action='store_true',
                      help='also score GT re-rendered with mixed identity parameters')
  args = parser.parse_args(argv)

  from fsjax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  pairs = _load_pairs(args.pairs, args.data_dir, args.num_pairs)
  size = pairs['swap'].shape[1]
  mask = synthetic_faces.inner_face_mask(pairs['identity_params'], pairs['attribute_params'],
                                         size, pairs.get('target_identity_params')) > 0.5
  xs, xt, gt = pairs['source'], pairs['target'], pairs['swap']
  results = {'num_pairs': len(gt), 'pairs': args.pairs,
             'return_target': _figures(xt, gt, mask), 'return_source': _figures(xs, gt, mask),
             'oracle_target_gt_inner_face': _figures(with_inner_face(xt, gt, mask), gt, mask)}
  rt = results['return_target']
  print(f"{len(gt)} pairs of {args.pairs} test; floors vs GT: X_t {rt['psnr']:.2f} dB / "
        f"SSIM {rt['ssim']:.3f} / face {rt['psnr_face']:.2f} dB; X_s "
        f"{results['return_source']['psnr']:.2f} / {results['return_source']['ssim']:.3f} / "
        f"{results['return_source']['psnr_face']:.2f}")
  ro = results['oracle_target_gt_inner_face']
  print(f"oracle X_t with GT's inner face: {ro['psnr']:.2f} dB / SSIM {ro['ssim']:.3f}")
  if args.parameter_oracles:
    if 'target_identity_params' not in pairs:
      print(f'error: {args.pairs} has no target_identity_params (dataset 3.0.0 pairs)',
            file=sys.stderr)
      return 2
    results['parameter_oracles'] = parameter_oracles(pairs, mask)
    for name, fig in results['parameter_oracles'].items():
      print(f"  {name}: {fig['psnr']:.2f} dB / SSIM {fig['ssim']:.3f} / face "
            f"{fig['psnr_face']:.2f} dB")
  print(f"targets (issue 19): default PSNR >= {max(20, rt['psnr'] + 6):.2f}, SSIM >= "
        f"{max(0.70, rt['ssim'] + 0.15):.3f}; HQ PSNR >= {max(24, rt['psnr'] + 10):.2f}, SSIM >= "
        f"{max(0.85, rt['ssim'] + 0.25):.3f}")
  for i, wd in enumerate(args.workdirs):
    res, y, r = evaluate(wd, pairs, mask)
    results[wd] = res
    s, rec = res['swap'], res['self_rec']
    print(f"{wd}: swap->GT {s['psnr']:.2f} dB / SSIM {s['ssim']:.3f} / face {s['psnr_face']:.2f} dB"
          f" | self-rec->X_t {rec['psnr']:.2f} / {rec['ssim']:.3f} / face {rec['psnr_face']:.2f}"
          f" | cos s/t {res['cos_source']:.3f}/{res['cos_target']:.3f}, closer to X_s "
          f"{100 * res['closer_to_source']:.1f}%, face colour {res['face_colour_transfer']:.2f}"
          f"  ({res['seconds']:.0f} s)", flush=True)
    reg, orc = res['regions'], res['oracle_gt_inner_face']
    print('  share of the swap error / colour slope: ' + ', '.join(
        f"{name} ({100 * v['pixels']:.0f}% of pixels) {100 * v['error_share']:.0f}%"
        + (f" / {v['colour']:.2f}" if 'colour' in v else '') for name, v in reg.items())
        + f" | with GT's inner face {orc['psnr']:.2f} dB / SSIM {orc['ssim']:.3f}", flush=True)
    if i == 0 and args.grid:
      from PIL import Image  # pylint: disable=g-import-not-at-top
      n = min(8, len(gt))
      rows = [np.concatenate([xs[k], xt[k], y[k], gt[k], r[k]], 1) for k in range(n)]
      Image.fromarray(np.concatenate(rows, 0)).save(args.grid)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  code = main()
  sys.exit(code if isinstance(code, int) else 0)
