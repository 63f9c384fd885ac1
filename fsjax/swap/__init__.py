"""Inference: the Swapper, exports, blending, video, provenance marking, file I/O."""
