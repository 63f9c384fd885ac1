"""HEAR-Net (FaceShifter stage 2, occlusion-aware refinement), in Flax linen (NHWC).

Input: concat(Y_hat_st, dY_t) [B, S, S, 6], both in [-1, 1] (dY_t = X_t - AEI(X_t, z_id(X_t))
lies in [-2, 2]); output: the refined swap Y_st [B, S, S, 3] in [-1, 1].

U-Net (shared/design/faceshifter.md "HEAR-Net"): down len(channels) x [Conv 4x4 s2 p1 (bias)
-> BatchNorm -> LeakyReLU(0.1)]; up len(channels) - 1 x [ConvTranspose 4x4 s2 p1 (bias) ->
BN -> LReLU(0.1)], each concatenated with the down feature of the same size; then bilinear
x2 (align_corners=True) -> Conv 3x3 p1 (bias) -> tanh. With the paper widths
(64, 128, 256, 512, 512) at 256 px the bottleneck is 8x8x512, the last concatenation
128x128x128, and there are 16,663,043 parameters.

`full_res_channels` > 0 (an fsjax option; 0 = the paper) adds a full-resolution path:
Conv 3x3 (bias) of the input -> LReLU(0.1), concatenated to the upsampled features before
the output conv. Without it every output pixel is a 3x3 conv of a bilinear x2 of half-size
features, which cannot return an input pixel sharply: at 64 px (configs/hear_synthetic.py)
the refined swap was blurrier than AEI-Net's (docs/fidelity.md "HEAR-Net").

`target_input` (an fsjax option; False = the paper) appends the target X_t itself to the
input (9 channels: concat(Y_hat_st, dY_t, X_t)). The paper's dY_t shows an occluder only where
AEI-Net fails to reconstruct it; an AEI-Net that reconstructs the target's occluders but drops
them in the swap (the synthetic default, docs/fidelity.md "HEAR-Net") leaves no trace of them
in dY_t, and X_t is where they are. Measured there: +2.8 dB in the occluder, but the trained
refinement then returns much of the target's face (ID retrieval 0.27 -> 0.06).

`blend_mask` (an fsjax option; False = the paper) makes the network say where the target shows
through: the output conv gives 4 channels, an image Y' = tanh(h[..., :3]) and a mask
m = sigmoid(h[..., 3]), and Y_st = m * X_t + (1 - m) * Y'. X_t comes from the input (it reads
9 channels, as with target_input); the trainer supervises m with the occluder masks it knows
(config.loss.mask). Measured (docs/fidelity.md "HEAR-Net that blends X_t in by a mask"): m
learns the occluders (0.47 inside, 0.06 outside on occluded test pairs), but Y' reads X_t too
and copies it (ID retrieval 0.26 -> 0.01), so the option stays off.

`mask_channels` (an fsjax option with blend_mask; () = one U-Net) gives m from a second U-Net
(layers `mask_*`) that reads concat(dY_t, X_t) alone, while Y' comes from the paper's
6-channel U-Net on concat(Y_hat_st, dY_t), so Y' cannot copy X_t and m cannot tell a same
pair. Measured (docs/fidelity.md "A mask branch that alone reads X_t"): +4.7 dB in the
occluder and +0.7 dB over the whole image, ID retrieval 0.27 -> 0.11 (the ground truth's is
0.18 on those pairs); off by default.

`keep_swap` (an fsjax option with mask_channels) drops the image U-Net: Y_st = m * X_t +
(1 - m) * Y_hat_st, so the refinement can only show the target through where m says and
leaves AEI-Net's swap untouched elsewhere (`channels` is then unused). `mask_threshold` t > 0
(an fsjax option) hardens m to (m > t) at inference (train=False): a soft tail of m over the
face blends a little of the target's identity into every pixel. Measured together
(configs/hear_synthetic_mask.py, docs/fidelity.md "HEAR-Net as a mask over AEI-Net's swap"):
+4.1 dB in the occluder, ID retrieval 0.27 -> 0.18, the ground truth's own.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fsjax.models import cpu_conv
from fsjax.models import layers

Dtype = Any


class _ConvTransposeBias(nn.Module):
  """cpu_conv.ConvTranspose plus a bias (PyTorch ConvTranspose2d(bias=True)), NHWC.

  Params: kernel [kh, kw, features, in_features] (the layout of cpu_conv.ConvTranspose),
  bias [features]; both float32.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]  # the torch padding of each side
  kernel_init: Any = layers.conv_init
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, Cin] -> [B, (H - 1) * s - pads + k, ..., features] in `dtype`."""
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (self.features, x.shape[-1]), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    y = cpu_conv.conv_transpose(x.astype(self.dtype), kernel.astype(self.dtype), self.strides,
                                self.padding)
    return y + bias.astype(self.dtype)


class HEARNet(nn.Module):
  """Heuristic Error Acknowledging Refinement Network (U-Net, 6 -> 3 channels).

  Attributes:
    channels: down-path widths, e.g. the paper's (64, 128, 256, 512, 512); the input size
      must be divisible by 2**len(channels). The up path mirrors them
      (reversed(channels[:-1])), the output conv reads 2 * channels[0] channels
      (+ full_res_channels).
    full_res_channels: width of the full-resolution input path (0: none, the paper).
    target_input: the input also carries X_t (`input_channels` 9; False: 6, the paper).
    blend_mask: the output is m * X_t + (1 - m) * Y' with a predicted mask m (the input then
      carries X_t, 9 channels; False: the paper's tanh image).
    mask_channels: with blend_mask, down-path widths of a second U-Net that alone gives m,
      from concat(dY_t, X_t), while the first reads the paper's 6 channels for Y'
      (() : m is a 4th output channel of the one U-Net, which then reads all 9).
    keep_swap: with mask_channels, no image U-Net: Y' is Y_hat_st itself.
    mask_threshold: > 0: at inference m is (m > mask_threshold), 0 or 1 (0: soft m).
    dtype: compute dtype, name ('float32' | 'bfloat16') or jnp dtype; params stay float32.
    axis_name: mapped axis over which BatchNorm averages its statistics (e.g. 'data' inside
      shard_map); None: the local batch.
  """
  channels: Sequence[int] = (64, 128, 256, 512, 512)
  full_res_channels: int = 0
  target_input: bool = False
  blend_mask: bool = False
  mask_channels: Sequence[int] = ()
  keep_swap: bool = False
  mask_threshold: float = 0.0
  dtype: Any = 'float32'
  axis_name: str | None = None

  @property
  def input_channels(self) -> int:
    """Channels of the input `hear_input` builds for this network (6, or 9 with X_t)."""
    return 9 if self.reads_target else 6

  @property
  def reads_target(self) -> bool:
    """Whether the input carries X_t (target_input, or blend_mask, which blends it in)."""
    return self.target_input or self.blend_mask

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_mask: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Refines a swap using the heuristic error.

    Args:
      x: [B, S, S, 6] = concat(Y_hat_st, dY_t) on the last axis: the AEI-Net swap in
        [-1, 1] and the target's heuristic reconstruction error (values in [-2, 2]);
        with target_input or blend_mask [B, S, S, 9], X_t in [-1, 1] appended
        (`hear_input`); S divisible by 2**len(channels) (and 2**len(mask_channels)).
      train: BatchNorm uses the batch statistics (apply with mutable=['batch_stats']) when
        True, the running averages when False.
      return_mask: also return the blend mask m (blend_mask networks only).

    Returns:
      Y_st [B, S, S, 3] float32 in [-1, 1]; with return_mask (Y_st, m [B, S, S] float32 in
      [0, 1]).
    """
    if self.mask_channels and not self.blend_mask:
      raise ValueError(f'mask_channels={tuple(self.mask_channels)} needs blend_mask')
    if self.keep_swap and not self.mask_channels:
      raise ValueError('keep_swap needs mask_channels (the mask U-Net is then the only one)')
    if not 0.0 <= self.mask_threshold < 1.0 or (self.mask_threshold and not self.blend_mask):
      raise ValueError(f'mask_threshold={self.mask_threshold}: needs blend_mask and 0 <= t < 1')
    c = self.input_channels
    if x.ndim != 4 or x.shape[3] != c:
      raise ValueError(f'input {x.shape}: expected [B, S, S, {c}]')
    dtype = layers.get_dtype(self.dtype)
    if not self.blend_mask:
      if return_mask:
        raise ValueError('return_mask needs a HEAR-Net with blend_mask')
      return jnp.tanh(self._unet(x, self.channels, 3, train, dtype, ''))
    target = x[..., 6:9].astype(jnp.float32)
    if self.mask_channels:
      logit = self._unet(x[..., 3:9], self.mask_channels, 1, train, dtype, 'mask_')
      if self.keep_swap:
        image = x[..., :3].astype(jnp.float32)
      else:
        # The image U-Net reads the paper's 6 channels, so only the mask can show X_t.
        image = jnp.tanh(self._unet(x[..., :6], self.channels, 3, train, dtype, ''))
    else:
      h = self._unet(x, self.channels, 4, train, dtype, '')
      image, logit = jnp.tanh(h[..., :3]), h[..., 3:]
    m = jax.nn.sigmoid(logit)
    if self.mask_threshold and not train:
      m = (m > self.mask_threshold).astype(jnp.float32)
    y = m * target + (1.0 - m) * image
    return (y, m[..., 0]) if return_mask else y

  def _unet(self, x: jax.Array, channels: Sequence[int], out_channels: int, train: bool,
            dtype: Any, prefix: str) -> jax.Array:
    """The U-Net body: [B, S, S, Cin] -> pre-activation [B, S, S, out_channels] float32;
    its layers are named `prefix` + down{i}_conv, ... (the paper's names with prefix '')."""
    if len(channels) < 2:
      raise ValueError(f'HEAR-Net needs at least 2 levels, got channels={tuple(channels)}')
    n = 2 ** len(channels)
    if x.shape[1] % n or x.shape[2] % n:
      raise ValueError(f'input {x.shape}: S must be divisible by {n} (channels '
                       f'{tuple(channels)})')
    h = x.astype(dtype)
    downs = []
    for i, c in enumerate(channels):
      h = cpu_conv.Conv(c, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=True,
                        kernel_init=layers.conv_init, dtype=dtype,
                        name=f'{prefix}down{i}_conv')(h)
      h = layers.batch_norm(train, self.axis_name, dtype, f'{prefix}down{i}_bn')(h)
      h = nn.leaky_relu(h, 0.1)
      downs.append(h)

    for j, c in enumerate(reversed(tuple(channels[:-1]))):
      h = _ConvTransposeBias(c, (4, 4), (2, 2), ((1, 1), (1, 1)), dtype=dtype,
                             name=f'{prefix}up{j}_conv')(h)
      h = layers.batch_norm(train, self.axis_name, dtype, f'{prefix}up{j}_bn')(h)
      h = nn.leaky_relu(h, 0.1)
      h = jnp.concatenate([h, downs[-2 - j]], axis=-1)

    h = layers.upsample2x(h)
    if self.full_res_channels:
      f = cpu_conv.Conv(self.full_res_channels, (3, 3), padding=((1, 1), (1, 1)),
                        use_bias=True, kernel_init=layers.conv_init, dtype=dtype,
                        name=f'{prefix}full_res_conv')(x.astype(dtype))
      h = jnp.concatenate([h, nn.leaky_relu(f, 0.1)], axis=-1)
    return cpu_conv.Conv(out_channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=True,
                         kernel_init=layers.conv_init, dtype=dtype,
                         name=f'{prefix}out_conv')(h).astype(jnp.float32)


def hear_input(y_hat_st: jax.Array, heuristic_error: jax.Array,
               target: jax.Array | None = None) -> jax.Array:
  """HEAR-Net input concat(Y_hat_st, dY_t[, X_t]): [B, S, S, 3] maps -> [B, S, S, 6 or 9]
  (X_t in [-1, 1] for a network with target_input, None for the paper's)."""
  maps = [y_hat_st, heuristic_error] + ([] if target is None else [target])
  return jnp.concatenate([m.astype(y_hat_st.dtype) for m in maps], axis=-1)


def input_of(hear: HEARNet, y_hat_st: jax.Array, heuristic_error: jax.Array,
             target: jax.Array) -> jax.Array:
  """`hear_input` of what `hear` reads: X_t [B, S, S, 3] in [-1, 1] joins only with
  target_input or blend_mask."""
  return hear_input(y_hat_st, heuristic_error, target if hear.reads_target else None)


def from_config(hear_config: ml_collections.ConfigDict, axis_name: str | None = None,
                dtype: Any = 'float32') -> HEARNet:
  """HEARNet from config.hear (`channels`, `full_res_channels`, `target_input`,
  `blend_mask`, `mask_channels`, `keep_swap`, `mask_threshold`); compute dtype from
  config.model.dtype."""
  return HEARNet(channels=tuple(hear_config.channels),
                 full_res_channels=int(hear_config.full_res_channels),
                 target_input=bool(hear_config.target_input),
                 blend_mask=bool(hear_config.blend_mask),
                 mask_channels=tuple(hear_config.mask_channels),
                 keep_swap=bool(hear_config.keep_swap),
                 mask_threshold=float(hear_config.mask_threshold), dtype=dtype,
                 axis_name=axis_name)
