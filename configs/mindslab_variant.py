"""The paper model with the mindslab-ai/faceshifter AAD and discriminator choices.

AAD: batch norm instead of instance norm, 3x3 gamma/beta convs, C-channel masks,
biased ResBlk convs; discriminator: n_layers 3 with batch norm.

Run:
  fsjax train --config configs/mindslab_variant.py --workdir /tmp/fs256_mindslab \
    --config.identity.checkpoint=/path/to/arcface_r50

Expected: about 2.4x the generator FLOPs of the default (3x3 AAD convs);
D 8.30M params over 3 scales (batch norm adds its affine parameters to 8.29M).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.aad_norm = 'batch'
  config.model.aad_att_kernel = 3
  config.model.aad_mask_channels = 'full'
  config.model.conv_bias = True
  config.discriminator.n_layers = 3
  config.discriminator.norm = 'batch'
  return config
