"""Training: Hungarian matcher, Mask2Former losses, the training loop, distributed helpers."""
