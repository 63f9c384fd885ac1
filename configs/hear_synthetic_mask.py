"""HEAR-Net as an occluder mask on the synthetic faces (fsjax options; configs/hear_synthetic.py
holds the paper's network at 64 px).

Run (after the README main job wrote workdirs/synthetic):

  fsjax train-hear --config configs/hear_synthetic_mask.py \
    --workdir workdirs/hear_synthetic_mask --aei workdirs/synthetic

The network is a U-Net that reads only concat(dY_t, X_t) and gives a mask m; the swap is
Y = m X_t + (1 - m) Y_hat with m hardened to m > 0.5 at inference, so the refinement can show
the target through where it finds an occluder and leaves AEI-Net's swap untouched elsewhere
(the paper's image U-Net, and a soft m, each pulled the face towards the target: ID retrieval
0.27 -> 0.11; docs/fidelity.md). It learns m from the occluder masks the pipeline knows
(L_mask, L_occ: the pasted cut-outs and each synthetic_faces record's own glasses or hand),
with L_chg keeping it off where X_t and Y_hat differ; L_rec' is off (the mask cannot tell a
same pair, where L_rec' would reward m = 1 everywhere).

Expected (measured 2026-12-03, rerun fresh 2026-12-04 to the same figures, on the README main
job's model; training 6.0 min on an idle 2-core AMD EPYC, 11.6 min on the 2026-12-03 CPU):
on the 1000 held-out synthetic_faces/occluded64 pairs occluder-region PSNR 15.11 -> 19.23 dB
(+4.12), whole image 20.51 -> 20.78 dB, ID top-1 0.266 -> 0.182 (the ground truth's own:
0.184); m finds 67.5 % of the occluders' pixels and marks 1.6 % of the rest; on plain pairs64
20.93 -> 20.95 dB, ID 0.242 -> 0.229 (X_t on the targets' own occluders over AEI-Net's swap:
0.224). README "HEAR-Net".
"""

from configs import hear_synthetic


def get_config():
  """Returns the mask-only HEAR-Net configuration (locked by the caller)."""
  config = hear_synthetic.get_config()
  config.hear.blend_mask = True
  config.hear.mask_channels = (32, 64, 128, 128)  # (16, 32, 64, 64): +3.45 dB, ID 0.184 / 0.214
  config.hear.keep_swap = True
  config.hear.mask_threshold = 0.5  # soft m: ID 0.13 / 0.17 (the tail over the face)
  config.loss.mask = 1.0
  config.loss.occ = 1.0
  config.loss.rec = 0.0
  config.dataset.own_occluder_masks = True
  return config
