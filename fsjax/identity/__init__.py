"""ArcFace identity encoders: checkpoints, the one resolver, converters, training."""
