"""Independent PyTorch (NCHW) reference models: the parity tests' golden outputs, the
converters' verification and the benchmark's PyTorch baseline.

Needs the [torch] extra; the modules import torch at their top, so import them only where
PyTorch is wanted (fsjax.bench.torch_baseline.import_reference does it lazily).
"""
