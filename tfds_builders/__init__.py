"""TFDS builders of fsjax: synthetic_faces and aligned_faces (import a sub-package to register it)."""
