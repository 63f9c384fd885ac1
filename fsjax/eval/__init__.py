"""Evaluation of swaps (`fsjax eval`, issue #17): run (protocol choice), synthetic (the
synthetic pairs), real_faces + faceforensics + folder (the FF++ protocol), metrics, media
(frame sampling), recognizers, regressor + estimators + cache (the synthetic estimators),
report + atomic (console and output files)."""
