"""Independent PyTorch (NCHW) reference models for parity tests and the benchmark."""
