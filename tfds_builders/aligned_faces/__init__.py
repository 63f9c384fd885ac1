"""aligned_faces dataset (importing this registers the builder with TFDS)."""

from .aligned_faces_dataset_builder import AlignedFacesConfig
from .aligned_faces_dataset_builder import Builder
