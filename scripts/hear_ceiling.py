"""How much of the occluder HEAR-Net's inputs carry, for one AEI-Net (issue 20 diagnosis).

  python scripts/hear_ceiling.py WORKDIR_OR_EXPORT [--num_pairs 300] [--data_dir D]

HEAR-Net sees only Y_hat = AEI(X_t, z_id(X_s)) and the heuristic error dY_t = X_t - AEI(X_t,
z_id(X_t)). On held-out synthetic_faces/occluded64 pairs (every target occluded, the ground
truth keeps the occluder, its mask known) this prints PSNR to the ground truth over the whole
image, inside the occluder and outside it, for fixed, parameter-free answers:

- Y_hat (AEI-Net alone);
- Y_hat + dY_t everywhere, and only where |dY_t| > t (t = 10, 20, 30 grey levels);
- Y_hat + dY_t inside the true occluder mask (an oracle for "where");
- X_t inside the true occluder mask (an oracle that also knows "what").

Y_hat + dY_t = X_t + (Y_hat - R) with R the self-reconstruction, so it restores the occluder
only where the swap and the self-reconstruction agree there, which is FaceShifter's premise (an
AEI-Net that loses occlusions in both). When even the "where" oracle gains little over Y_hat
while the "what" oracle gains several dB, the heuristic error does not carry the occluder
linearly; these are parameter-free answers, not a bound on what a trained HEAR-Net infers.
"""

import argparse
import os
import sys

import numpy as np


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('checkpoint')
  parser.add_argument('--num_pairs', type=int, default=300)
  parser.add_argument('--pairs', default='synthetic_faces/occluded64')
  parser.add_argument('--data_dir', default='')
  args = parser.parse_args(argv)

  # pylint: disable=g-import-not-at-top
  import fsjax
  from fsjax.eval import metrics
  from fsjax.eval import synthetic
  pairs = synthetic.load_pairs(args.pairs, args.data_dir, 'test', args.num_pairs)
  if 'occluder' not in pairs:
    sys.exit(f'{args.pairs} has no occluder masks (use synthetic_faces/occludedN)')
  swapper = fsjax.load_swapper(args.checkpoint)
  xs, xt, gt, occ = pairs['source'], pairs['target'], pairs['swap'], pairs['occluder']
  as_float = lambda v: np.asarray(v, np.float64)
  # AEI-Net alone, also for an export that carries a HEAR-Net: these are HEAR-Net's inputs.
  y_hat = as_float(swapper.generate(xt, swapper.embed_crops(xs), hear=False))
  dy = as_float(xt) - as_float(swapper.generate(xt, swapper.embed_crops(xt), hear=False))
  mag = np.abs(dy).mean(-1, keepdims=True)
  answers = [('Y_hat (AEI-Net alone)', y_hat), ('Y_hat + dY_t', y_hat + dy)]
  answers += [(f'Y_hat + dY_t where |dY_t| > {t}', y_hat + (mag > t) * dy) for t in (10, 20, 30)]
  answers += [('oracle: Y_hat + dY_t in the occluder', y_hat + occ[..., None] * dy),
              ('oracle: X_t in the occluder', np.where(occ[..., None], as_float(xt), y_hat))]
  print(f'{len(gt)} pairs of {args.pairs} test; occluder {100 * occ.mean():.1f}% of pixels; '
        f'mean |dY_t| {np.abs(dy)[occ].mean():.1f} grey levels inside, '
        f'{np.abs(dy)[~occ].mean():.1f} outside')
  print(f"{'answer':40s} {'whole':>7s} {'occluder':>9s} {'outside':>8s}")
  for name, y in answers:
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    figures = [metrics.mean_psnr(metrics.psnr(y, gt, mask=m)) for m in (None, occ, ~occ)]
    print(f'{name:40s} ' + ' '.join(f'{v:{w}.2f}' for v, w in zip(figures, (7, 9, 8))))


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
