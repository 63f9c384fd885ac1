"""Face data for fsjax: the synthetic face renderer and TFDS build helpers."""
