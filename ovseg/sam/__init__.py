"""Segment Anything in ovseg: SAM checkpoints by name (:mod:`.zoo`), point / box prompts
(:mod:`.prompts`), SAM as a mask source (:mod:`.masks`), open-vocabulary labels for any masks
(:mod:`.labels`, :mod:`.segment`), and the masks of the prompt head that runs SAM's prompt
encoder and mask decoder on the frozen CLIP (:mod:`.prompt_head`; the module itself is
:mod:`ovseg.modeling.prompt_head`, trained by :mod:`.training`).

Nothing heavy is imported here; ``segment_anything`` is imported where it is used.
"""
