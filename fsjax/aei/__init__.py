"""AEI-Net (FaceShifter stage 1) training: losses, the pure train step, the loop."""
