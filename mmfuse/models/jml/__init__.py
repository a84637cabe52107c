"""JML (joint multimodal aspect-sentiment): the model, its relation module, span decoding and presets."""
