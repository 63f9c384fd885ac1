"""Face verification figures (numpy): deterministic pairs, 10-fold accuracy, TAR at a FAR.

The usual LFW-style protocol: cosine scores of same- and different-identity pairs;
accuracy with the threshold chosen on the other folds; TAR at the threshold whose
false-accept rate on different pairs is `far`.
"""

import math

import numpy as np


def make_pairs(labels: np.ndarray, num_pairs: int, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic verification pairs of a labelled set.

  Positives: all same-label index pairs (i < j), or `num_pairs` of them drawn without
  replacement; negatives: `num_pairs` distinct different-label pairs drawn at random.

  Args:
    labels: int [N] identity labels.
    num_pairs: N_pos = min(num_pairs, available) positives and num_pairs negatives.
    seed: numpy seed (same pairs for the same labels and seed).
  Returns:
    (pairs int64 [P, 2], same bool [P]) with positives first.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  pos = []
  for label in np.unique(labels):
    idx = np.flatnonzero(labels == label)
    ii, jj = np.triu_indices(len(idx), k=1)
    pos.append(np.stack([idx[ii], idx[jj]], 1))
  pos = np.concatenate(pos) if pos else np.zeros((0, 2), np.int64)
  if len(pos) > num_pairs:
    pos = pos[np.sort(rng.choice(len(pos), num_pairs, replace=False))]
  neg = set()
  n = len(labels)
  while len(neg) < num_pairs:
    i, j = rng.integers(n, size=2)
    if labels[i] != labels[j]:
      neg.add((min(i, j), max(i, j)))
  neg = np.asarray(sorted(neg), np.int64).reshape(-1, 2)
  neg = neg[rng.permutation(len(neg))]
  pairs = np.concatenate([pos, neg]).astype(np.int64)
  same = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
  return pairs, same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
  """(threshold, accuracy) maximising accuracy of `score > threshold` on these pairs."""
  scores = np.asarray(scores, np.float64)
  same = np.asarray(same, bool)
  order = np.argsort(scores)
  s, y = scores[order], same[order]
  # Threshold below element k: predicted positive = elements k..P-1.
  pos_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])  # positives at index >= k
  neg_below = np.concatenate([[0], np.cumsum(~y)])  # negatives at index < k
  correct = pos_above + neg_below
  k = int(np.argmax(correct))
  if k == 0:
    thr = s[0] - 1e-6
  elif k == len(s):
    thr = s[-1] + 1e-6
  else:
    thr = 0.5 * (s[k - 1] + s[k])
  return float(thr), float(correct[k] / len(s))


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0
                   ) -> tuple[float, float]:
  """LFW protocol: threshold chosen on k-1 folds, accuracy on the held-out fold.

  Returns:
    (mean held-out accuracy, its standard deviation over the folds).
  """
  scores, same = np.asarray(scores), np.asarray(same, bool)
  fold = np.random.default_rng(seed).permutation(len(scores)) % folds
  accs = []
  for k in range(folds):
    test = fold == k
    thr, _ = best_threshold(scores[~test], same[~test])
    accs.append(np.mean((scores[test] > thr) == same[test]))
  return float(np.mean(accs)), float(np.std(accs))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float = 1e-3
               ) -> tuple[float, float]:
  """True-accept rate at a false-accept rate: threshold = the smallest score that at most
  floor(far * N_neg) negatives exceed (strictly); TAR = fraction of positives above it.

  Returns:
    (TAR, threshold).
  """
  scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
  neg = np.sort(scores[~same])[::-1]
  k = int(math.floor(far * len(neg) + 1e-9))
  thr = neg[k] if k < len(neg) else neg[-1] - 1e-6
  return float(np.mean(scores[same] > thr)), float(thr)


def verification_metrics(embeddings: np.ndarray, pairs: np.ndarray, same: np.ndarray, *,
                         folds: int = 10, far: float = 1e-3) -> dict[str, float]:
  """Cosine-similarity verification of unit embeddings [N, D] on `pairs` [P, 2].

  Returns:
    {'accuracy' (k-fold held-out threshold), 'accuracy_std', 'best_accuracy' (best
    threshold on all pairs), 'threshold', 'tar_at_far', 'far', 'far_threshold',
    'num_pairs', 'positive_mean', 'negative_mean'}.
  """
  e = np.asarray(embeddings, np.float64)
  e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
  scores = np.sum(e[pairs[:, 0]] * e[pairs[:, 1]], axis=-1)
  acc, acc_std = kfold_accuracy(scores, same, folds)
  thr, best = best_threshold(scores, same)
  tar, far_thr = tar_at_far(scores, same, far)
  return {'accuracy': acc, 'accuracy_std': acc_std, 'best_accuracy': best, 'threshold': thr,
          'tar_at_far': tar, 'far': float(far), 'far_threshold': far_thr,
          'num_pairs': float(len(scores)), 'positive_mean': float(scores[same].mean()),
          'negative_mean': float(scores[~same].mean())}
