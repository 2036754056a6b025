"""The synthetic open-vocabulary world and its experiment.

``scenes`` (COCO-panoptic scenes of shapes on textures, with captions), ``render`` (drawing
them), ``clip_training`` (a tiny CLIP trained on the captions), ``world`` (the experiment: CLIP,
segmentation on base classes, evaluation on base and novel classes) and ``report``.
This package imports the core (ovseg.data, ovseg.train, ovseg.evaluation ...); the core never
imports it.
"""
