"""The synthetic open-vocabulary world and its experiment.

``scenes`` (COCO-panoptic scenes of shapes on textures, with captions), ``render`` (drawing
them), ``clip_training`` (a tiny CLIP trained on image- and region-caption pairs),
``caption_pairs`` (the world's crop and region caption pairs, and the CLIP's zero-shot accuracy
on them), ``world`` (the experiment: CLIP, segmentation on base classes, the shipped weights)
and ``report`` (evaluation on base and novel classes, diagnostics, figure, report files).
This package imports the core (ovseg.data, ovseg.train, ovseg.evaluation ...); the core never
imports it.
"""
