"""synthetic_faces dataset (importing this registers the builder with TFDS)."""

from .synthetic_faces_dataset_builder import Builder
from .synthetic_faces_dataset_builder import SyntheticFacesConfig
