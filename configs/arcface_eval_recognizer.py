"""The independent recognizer of the synthetic evaluation protocol (`fsjax eval`).

ID retrieval must not be scored by the network the swap was trained against (the
FaceShifter paper used CosFace, not its training ArcFace). This is an ArcFace trained on
the same synthetic identities (synthetic_faces/112, 3000 train identities) as
configs/arcface_synthetic.py but with another architecture and seed: IResNet stages
(2, 1, 1, 1) instead of (1, 1, 1, 1), a 96-d embedding instead of 128, seed 1, and a
shorter schedule (3000 steps instead of 4000).

`fsjax eval --protocol synthetic` trains it on first use and caches it (fsjax.eval.estimators,
$FSJAX_CACHE/eval/recognizer-<key>/identity); to train it by hand:

  fsjax train-arcface --config configs/arcface_eval_recognizer.py --workdir /tmp/eval_recognizer

Expected: see README "Evaluation" (verification on the 300 held-out identities, CPU minutes).
"""

from configs import arcface_synthetic


def get_config():
  config = arcface_synthetic.get_config()
  config.seed = 1
  config.model.layers = (2, 1, 1, 1)
  config.model.embedding_dim = 96
  # 1500 steps without flips: 84.5% verification on synthetic_faces 2.0.0 (docs/evaluation.md).
  config.num_train_steps = 3000
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 100
  return config
