"""RADM (residual attention-based cross-modal deep interaction): the model and its presets."""
