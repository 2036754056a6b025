"""ovseg: open-vocabulary semantic, instance and panoptic segmentation (FC-CLIP).

Nothing heavy is imported here; the public names load on first use.
"""

__version__ = "0.1.0"

__all__ = ["OVSegPredictor", "build_model", "load_config", "load_vocabulary", "Vocabulary"]


def __getattr__(name):
    if name == "OVSegPredictor":
        from ovseg.predictor import OVSegPredictor

        return OVSegPredictor
    if name == "build_model":
        from ovseg.modeling.fcclip import build_model

        return build_model
    if name == "load_config":
        from ovseg.config import load_config

        return load_config
    if name in ("load_vocabulary", "Vocabulary"):
        from ovseg import vocabulary

        return getattr(vocabulary, name)
    raise AttributeError(f"module 'ovseg' has no attribute '{name}'")
