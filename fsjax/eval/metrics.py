"""Face-swap evaluation metrics in plain numpy (FaceForensics++-style protocol, issue #17).

Image metrics (reconstruction quality, e.g. of a self-swap against its target):

- `psnr`: peak signal-to-noise ratio in dB, 10 log10(R^2 / MSE), MSE over all pixels and
  channels (or over the pixels of a mask). Identical images give +inf; `mean_psnr` says
  how a mean treats that.
- `ssim`: structural similarity (Wang, Bovik, Sheikh and Simoncelli 2004, "Image quality
  assessment: from error visibility to structural similarity"): 11 x 11 Gaussian window
  with sigma 1.5, K1 = 0.01, K2 = 0.03, population (not sample) local variances, computed
  per channel and averaged over channels; the mean is over the positions where the window
  lies fully inside the image. This is exactly the variant of
  `skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, channel_axis=-1, data_range=R)` (scikit-image's Gaussian
  window has truncate=3.5, i.e. radius 5, and it averages the SSIM map after cropping 5 px
  off each border, which is what the "valid" convolution here computes directly).

Masked versions ("face region" PSNR/SSIM) take a boolean mask [H, W] (True = inside):
PSNR averages the squared error over the masked pixels; SSIM averages the SSIM map over
the masked positions whose window lies inside the image (the mask cropped by 5 px on each
side), i.e. the same map scikit-image returns with full=True, masked.

Identity, pose and expression metrics (the FaceShifter / FF++ table, see
../shared/design/faceshifter.md "Published anchors"):

- `id_retrieval`: top-k nearest-neighbour accuracy by cosine similarity of query
  embeddings (swaps) against a gallery (original frames).
- `mean_cosine`: mean row-wise cosine between two sets of embeddings.
- `pose_error`: mean L2 distance of (yaw, pitch, roll) in degrees.
- `expression_error`: mean L2 distance of expression descriptors.
- `unchanged_fraction`: how much of the frame outside the paste-back mask the swap left
  bit-exactly untouched (a paste-back check: should be 1.0).
"""

from typing import Mapping, Optional, Sequence

import numpy as np

# SSIM constants (Wang et al. 2004).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5), scikit-image's truncate=3.5: an 11 x 11 window.

# `mean_psnr` caps infinite (and larger) values here. 100 dB lies below the PSNR of the
# smallest possible error on a 256 x 256 uint8 RGB image (one channel of one pixel off by
# 1: 10 log10(255^2 * 196608) = 101 dB), so any pair at the cap is a (near) exact copy.
PSNR_CAP = 100.0


def _pair(a, b) -> tuple[np.ndarray, np.ndarray, bool]:
  """(a, b) as float64 [B, H, W, C], and whether the input was a single image."""
  a_in, b_in = np.asarray(a), np.asarray(b)
  if a_in.shape != b_in.shape:
    raise ValueError(f'images differ in shape: {a_in.shape} vs {b_in.shape}')
  if a_in.ndim not in (3, 4):
    raise ValueError(f'expected [H, W, C] or [B, H, W, C] images, got {a_in.shape}')
  single = a_in.ndim == 3
  a_f, b_f = a_in.astype(np.float64), b_in.astype(np.float64)
  if single:
    a_f, b_f = a_f[None], b_f[None]
  return a_f, b_f, single


def _data_range(a, b, data_range: Optional[float]) -> float:
  """R: given, or 255 when both images are uint8. Float images need it explicitly,
  because fsjax uses both [0, 1] and [-1, 1] floats and a wrong guess is silent."""
  if data_range is not None:
    return float(data_range)
  if np.asarray(a).dtype == np.uint8 and np.asarray(b).dtype == np.uint8:
    return 255.0
  raise ValueError('data_range is required for non-uint8 images (1.0 for [0, 1], 2.0 for '
                   '[-1, 1])')


def _mask(mask, batch: int, height: int, width: int) -> Optional[np.ndarray]:
  """Boolean mask broadcast to [B, H, W], or None."""
  if mask is None:
    return None
  m = np.asarray(mask)
  if m.dtype != bool:
    m = m > 0
  if m.shape == (height, width):
    m = np.broadcast_to(m, (batch, height, width))
  if m.shape != (batch, height, width):
    raise ValueError(f'mask must be [H, W] or [B, H, W] = {(batch, height, width)}, '
                     f'got {np.shape(mask)}')
  return m


def _out(values: np.ndarray, single: bool):
  return float(values[0]) if single else values


def mse(a, b, mask=None):
  """Mean squared error per image, in the images' own units.

  Args:
    a, b: images [H, W, C] or batches [B, H, W, C] of the same shape (any dtype).
    mask: optional bool [H, W] or [B, H, W]; True = pixel counts. Non-bool masks count
      where > 0.

  Returns:
    float (single image) or float64 [B]; NaN where a mask is empty.
  """
  a_f, b_f, single = _pair(a, b)
  sq = ((a_f - b_f) ** 2).mean(axis=-1)  # [B, H, W], averaged over channels.
  m = _mask(mask, *sq.shape)
  if m is None:
    values = sq.reshape(len(sq), -1).mean(axis=1)
  else:
    count = m.reshape(len(m), -1).sum(axis=1)
    total = np.where(m, sq, 0.0).reshape(len(sq), -1).sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
      values = total / count
  return _out(values, single)


def psnr(a, b, mask=None, data_range: Optional[float] = None):
  """Peak signal-to-noise ratio in dB: 10 log10(R^2 / MSE).

  Args:
    a, b: images uint8 or float, [H, W, C] or batches [B, H, W, C], same shape.
    mask: optional bool [H, W] or [B, H, W] (True = inside the evaluated region): the MSE
      is then averaged over the masked pixels (all channels) only.
    data_range: R, the span of possible values. Default 255 when both inputs are uint8;
      required for float inputs (1.0 for images in [0, 1], 2.0 for [-1, 1]).

  Returns:
    float (single image) or float64 [B]. +inf where the images are identical (inside the
    mask); NaN where a mask is empty. See `mean_psnr` for averaging.
  """
  r = _data_range(a, b, data_range)
  err = np.atleast_1d(np.asarray(mse(a, b, mask), np.float64))
  with np.errstate(divide='ignore', invalid='ignore'):
    values = 10.0 * np.log10(r * r / err)
  return float(values[0]) if np.ndim(a) == 3 else values


def mean_psnr(values, *, inf: str = 'cap', cap: float = PSNR_CAP) -> float:
  """Mean of per-pair PSNR values [N] in dB, with a stated policy for +inf.

  Args:
    values: per-pair PSNR (from `psnr`); NaN entries (empty masks) are always ignored.
    inf: 'cap' (default): every value is clipped to `cap` before averaging, so exact copies
      count as `cap` dB (neither +inf, which would make the mean meaningless, nor dropped,
      which would hide that they are perfect). 'exclude': values above `cap` (the +inf
      ones) are left out of the mean.
    cap: the cap in dB (default PSNR_CAP = 100).

  Returns:
    The mean in dB (NaN when nothing is left to average).
  """
  v = np.asarray(values, np.float64).ravel()
  v = v[~np.isnan(v)]
  if inf == 'cap':
    v = np.minimum(v, cap)
  elif inf == 'exclude':
    v = v[v <= cap]
  else:
    raise ValueError(f"inf must be 'cap' or 'exclude', got {inf!r}")
  return float(v.mean()) if v.size else float('nan')


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
  """The normalised 1-D Gaussian, float64 [2 * radius + 1] (exp(-x^2 / 2 sigma^2) / sum)."""
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Separable 'valid' correlation of x [B, H, W, C] with w along H and W.

  Returns [B, H - 2r, W - 2r, C]: only positions where the window fits, which is the
  region scikit-image averages after cropping its reflect-padded filter output, so no
  border handling is needed at all.
  """
  n = len(w)
  h = np.lib.stride_tricks.sliding_window_view(x, n, axis=1) @ w  # [B, H-2r, W, C]
  return np.lib.stride_tricks.sliding_window_view(h, n, axis=2) @ w


def ssim_map(a, b, data_range: Optional[float] = None) -> np.ndarray:
  """The local SSIM values per channel, float64 [B, H - 10, W - 10, C] (or without B).

  Position (i, j) of the map is the window centred on pixel (i + 5, j + 5).
  Args and variant as `ssim`.
  """
  r = _data_range(a, b, data_range)
  x, y, single = _pair(a, b)
  height, width = x.shape[1:3]
  if min(height, width) < 2 * SSIM_RADIUS + 1:
    raise ValueError(f'images must be at least 11 x 11 for SSIM, got {height} x {width}')
  w = gaussian_window()
  mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
  # Population (biased) local moments: use_sample_covariance=False in scikit-image.
  var_x = _filter_valid(x * x, w) - mu_x * mu_x
  var_y = _filter_valid(y * y, w) - mu_y * mu_y
  cov_xy = _filter_valid(x * y, w) - mu_x * mu_y
  c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
  s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
      (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
  return s[0] if single else s


def ssim(a, b, mask=None, data_range: Optional[float] = None):
  """Structural similarity (Wang et al. 2004), Gaussian-window variant (see module doc).

  Args:
    a, b: images uint8 or float, [H, W, C] or batches [B, H, W, C], same shape, H, W >= 11.
    mask: optional bool [H, W] or [B, H, W] (True = inside). The SSIM map (averaged over
      channels) is averaged over the masked positions whose 11 x 11 window lies inside
      the image, i.e. over mask[5:-5, 5:-5]. The windows themselves still read pixels just
      outside the mask: a face-region SSIM, not an SSIM of the face pasted on black.
    data_range: as for `psnr` (default 255 for uint8, required for floats).

  Returns:
    float (single image) or float64 [B], in [-1, 1]; 1 for identical images; NaN where
    the cropped mask is empty.
  """
  s = ssim_map(a, b, data_range)
  single = s.ndim == 3
  if single:
    s = s[None]
  s = s.mean(axis=-1)  # [B, H', W']: per-channel SSIM averaged over channels.
  batch, height, width = s.shape
  m = _mask(mask, batch, height + 2 * SSIM_RADIUS, width + 2 * SSIM_RADIUS)
  if m is None:
    values = s.reshape(batch, -1).mean(axis=1)
  else:
    m = m[:, SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]
    count = m.reshape(batch, -1).sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
      values = np.where(m, s, 0.0).reshape(batch, -1).sum(axis=1) / count
  return _out(values, single)


def mean_ssim(values) -> float:
  """Mean of per-pair SSIM values (always finite), ignoring NaN (empty masks)."""
  v = np.asarray(values, np.float64).ravel()
  v = v[~np.isnan(v)]
  return float(v.mean()) if v.size else float('nan')


def _unit(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f'expected embeddings [N, D], got {x.shape}')
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_matrix(a, b) -> np.ndarray:
  """Cosine similarities float64 [N, M] between rows of a [N, D] and b [M, D]."""
  return _unit(a) @ _unit(b).T


def mean_cosine(a, b) -> float:
  """Mean over i of cos(a[i], b[i]) for embeddings a, b [N, D] (any norm)."""
  ua, ub = _unit(a), _unit(b)
  if ua.shape != ub.shape:
    raise ValueError(f'embeddings differ in shape: {ua.shape} vs {ub.shape}')
  return float(np.sum(ua * ub, axis=1).mean())


def retrieval_ranks(query_emb, gallery_emb, true_index,
                    gallery_labels: Optional[Sequence[int]] = None) -> np.ndarray:
  """Rank (0 = nearest) of the correct gallery entry for each query, by cosine.

  Args:
    query_emb: [N, D] embeddings (e.g. of swaps), any norm.
    gallery_emb: [M, D] embeddings (e.g. of the original frames), any norm.
    true_index: int [N]. Without gallery_labels: the index in [0, M) of each query's
      correct gallery entry. With gallery_labels: each query's correct label.
    gallery_labels: optional int [M] label per gallery entry (e.g. the source video of
      each frame, as in the FF++ protocol, where retrieving any frame of the right video
      counts). Default: every entry is its own label (labels = arange(M)).

  Returns:
    int [N]: the number of gallery entries with a wrong label whose cosine is at least
    the best cosine of a correct entry. Ties count against the query (a gallery holding
    an exact duplicate under another label is not a hit at top-1). A query whose label
    is absent from the gallery gets rank M.
  """
  sims = cosine_matrix(query_emb, gallery_emb)  # [N, M]
  n, m = sims.shape
  true_index = np.asarray(true_index).reshape(-1)
  if true_index.shape != (n,):
    raise ValueError(f'true_index must be [{n}], got {true_index.shape}')
  if gallery_labels is None:
    if np.any((true_index < 0) | (true_index >= m)):
      raise ValueError(f'true_index out of range [0, {m})')
    labels = np.arange(m)
  else:
    labels = np.asarray(gallery_labels).reshape(-1)
    if labels.shape != (m,):
      raise ValueError(f'gallery_labels must be [{m}], got {labels.shape}')
  correct = labels[None, :] == true_index[:, None]  # [N, M]
  best = np.where(correct, sims, -np.inf).max(axis=1)  # -inf when the label is absent.
  ranks = np.sum(~correct & (sims >= best[:, None]), axis=1)
  return np.where(np.isneginf(best), m, ranks)


def id_retrieval(query_emb, gallery_emb, true_index, ks: Sequence[int] = (1, 5),
                 gallery_labels: Optional[Sequence[int]] = None) -> Mapping[int, float]:
  """Top-k identity retrieval accuracy by cosine similarity.

  The FaceShifter "ID retrieval" figure is k = 1 with query = swap embeddings, gallery =
  original frames, labels = source video (see `retrieval_ranks` for the arguments and
  how ties count).

  Returns:
    {k: fraction in [0, 1] of queries whose correct entry is among the k nearest}.
  """
  ranks = retrieval_ranks(query_emb, gallery_emb, true_index, gallery_labels)
  return {int(k): float(np.mean(ranks < k)) for k in ks}


def pose_error(pose_a, pose_b) -> float:
  """Mean L2 distance in degrees between head poses (yaw, pitch, roll) [N, 3] (or [3]).

  Angle differences are wrapped into [-180, 180) first, so that e.g. roll 179 vs -179
  counts as 2 degrees (never reached by faces the detector finds, but cheap insurance).
  """
  a, b = np.atleast_2d(np.asarray(pose_a, np.float64)), np.atleast_2d(
      np.asarray(pose_b, np.float64))
  if a.shape != b.shape or a.shape[-1] != 3:
    raise ValueError(f'expected poses [N, 3], got {a.shape} and {b.shape}')
  d = (a - b + 180.0) % 360.0 - 180.0
  return float(np.linalg.norm(d, axis=-1).mean())


def expression_error(expr_a, expr_b) -> float:
  """Mean L2 distance between expression descriptors [N, E] (or [E])."""
  a, b = np.atleast_2d(np.asarray(expr_a, np.float64)), np.atleast_2d(
      np.asarray(expr_b, np.float64))
  if a.shape != b.shape:
    raise ValueError(f'descriptors differ in shape: {a.shape} vs {b.shape}')
  return float(np.linalg.norm(a - b, axis=-1).mean())


def unchanged_fraction(output, target, mask):
  """Fraction of the pixels outside the paste-back mask that are exactly unchanged.

  A pasted-back swap should touch only the face region; this measures how much of the
  rest of the frame came back bit-exact (1.0 for a correct paste-back; lossy video
  re-encoding lowers it).

  Args:
    output, target: images [H, W, C] or [B, H, W, C] of the same shape and dtype.
    mask: the paste-back region, [H, W] or [B, H, W], bool or a float alpha; pixels
      where mask > 0 (True) are inside and ignored.

  Returns:
    float (single image) or float64 [B] in [0, 1]: among pixels with mask == 0, the
    fraction whose every channel equals the target's. NaN when nothing is outside.
  """
  out, tgt = np.asarray(output), np.asarray(target)
  if out.shape != tgt.shape or out.ndim not in (3, 4):
    raise ValueError(f'expected two [B,] H, W, C images of one shape, got {out.shape} '
                     f'and {tgt.shape}')
  single = out.ndim == 3
  if single:
    out, tgt = out[None], tgt[None]
  same = np.all(out == tgt, axis=-1)  # [B, H, W]
  outside = ~_mask(mask, *same.shape)
  count = outside.reshape(len(same), -1).sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    values = (same & outside).reshape(len(same), -1).sum(axis=1) / count
  return _out(values, single)
