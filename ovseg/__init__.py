"""ovseg: open-vocabulary semantic, instance and panoptic segmentation (FC-CLIP).

    from ovseg import OVSegPredictor
    predictor = OVSegPredictor.from_pretrained("synthetic_tiny")
    result = predictor.predict("scene.png", vocabulary=["star", "ring", "grass"])

Nothing heavy is imported here; the public names load on first use.
"""

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "OVSegPredictor": "ovseg.predictor",
    "ImageFeatures": "ovseg.predictor",
    "load_predictor": "ovseg.predictor",
    "build_model": "ovseg.modeling.fcclip",
    "load_config": "ovseg.config",
    "Vocabulary": "ovseg.vocabulary",
    "as_vocabulary": "ovseg.vocabulary",
    "load_vocabulary": "ovseg.vocabulary",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ovseg' has no attribute '{name}'")
