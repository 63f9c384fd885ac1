"""Independent PyTorch IResNet (arcface_torch layout and state_dict names) for parity tests.

Module names match arcface_torch's backbone.pth keys: conv1, bn1, prelu,
layer{1..4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}, bn2, fc,
features. A real, runnable model: the benchmark reuses it as the PyTorch baseline.
"""

import torch
from torch import nn

ARCHS = {
    'r18': ((2, 2, 2, 2), 64, 512),
    'r34': ((3, 4, 6, 3), 64, 512),
    'r50': ((3, 4, 14, 3), 64, 512),
    'r100': ((3, 13, 30, 3), 64, 512),
    'tiny': ((1, 1, 1, 1), 8, 64),
}


def _conv3x3(cin, cout, stride=1):
  return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
  """bn1 -> conv1 -> bn2 -> prelu -> conv2 (stride) -> bn3, + (downsample) shortcut."""

  def __init__(self, cin, cout, stride=1, downsample=None, eps=1e-5):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin, eps=eps)
    self.conv1 = _conv3x3(cin, cout)
    self.bn2 = nn.BatchNorm2d(cout, eps=eps)
    self.prelu = nn.PReLU(cout)
    self.conv2 = _conv3x3(cout, cout, stride)
    self.bn3 = nn.BatchNorm2d(cout, eps=eps)
    self.downsample = downsample

  def forward(self, x):
    y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    shortcut = x if self.downsample is None else self.downsample(x)
    return y + shortcut


class IResNet(nn.Module):
  """NCHW input [B, 3, 112, 112] in [-1, 1] -> [B, D] (not normalised).

  stem_stride=2 (fsjax's option for small CPU encoders) strides the stem conv: every map is
  half the size and the head sees 4 x 4 instead of 7 x 7.
  """

  def __init__(self, layers, width=64, embedding_dim=512, eps=1e-5, stem_stride=1):
    super().__init__()
    self.conv1 = _conv3x3(3, width, stem_stride)
    side = 112 // stem_stride
    self.bn1 = nn.BatchNorm2d(width, eps=eps)
    self.prelu = nn.PReLU(width)
    cin = width
    for stage, blocks in enumerate(layers):
      cout = width * 2**stage
      down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                           nn.BatchNorm2d(cout, eps=eps))
      mods = [IBasicBlock(cin, cout, 2, down, eps)]
      mods += [IBasicBlock(cout, cout, 1, None, eps) for _ in range(blocks - 1)]
      setattr(self, f'layer{stage + 1}', nn.Sequential(*mods))
      cin = cout
      side = (side - 1) // 2 + 1  # 3x3 stride 2, padding 1
    self.bn2 = nn.BatchNorm2d(cin, eps=eps)
    self.fc = nn.Linear(cin * side * side, embedding_dim)
    self.features = nn.BatchNorm1d(embedding_dim, eps=eps)
    nn.init.constant_(self.features.weight, 1.0)
    self.features.weight.requires_grad = False

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = torch.flatten(self.bn2(x), 1)
    return self.features(self.fc(x))


def iresnet(arch, eps=1e-5, stem_stride=1):
  """Builds the reference model by ARCHS name."""
  layers, width, dim = ARCHS[arch]
  return IResNet(layers, width, dim, eps, stem_stride)


def randomize_batchnorm(model, seed=0):
  """Gives every BN a non-trivial affine and running stats (features' weight stays 1)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, mod in model.named_modules():
      if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        n = mod.num_features
        if name != 'features':
          mod.weight.copy_(0.5 + torch.rand(n, generator=gen))
        mod.bias.copy_(0.2 * torch.randn(n, generator=gen))
        mod.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
        mod.running_var.copy_(0.5 + torch.rand(n, generator=gen))
      if isinstance(mod, nn.PReLU):
        mod.weight.copy_(0.1 + 0.3 * torch.rand(mod.weight.shape, generator=gen))
  return model


def calibrate_batchnorm(model, x):
  """Sets every BN's running stats to the batch statistics of `x` (one train-mode pass)."""
  moms = {}
  for mod in model.modules():
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
      moms[mod] = mod.momentum
      mod.momentum = 1.0
  was_training = model.training
  model.train()
  with torch.no_grad():
    model(x)
  for mod, m in moms.items():
    mod.momentum = m
  model.train(was_training)
  return model
