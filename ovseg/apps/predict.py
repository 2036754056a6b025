"""``ovseg predict`` (and ``demo/predict.py``): segment images and videos for any classes and
write an overlay, a label map and a JSON per image. ``main(argv)`` returns an exit code.

The parts: the arguments (:mod:`ovseg.apps.predict_arguments`), the inputs and their plan
(:mod:`ovseg.apps.predict_inputs`), the work on each input
(:mod:`ovseg.apps.predict_segment`); here, the run that joins them."""

from __future__ import annotations

import sys
from pathlib import Path

from ovseg.apps.outputs import UsageError, check_writable
from ovseg.apps.predict_arguments import build_parser, check_arguments
from ovseg.apps.predict_inputs import plan_inputs
from ovseg.apps.predict_segment import segment_all


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    args.prompts = args.sam_masks = None
    try:
        return run(args)
    except (UsageError, ValueError, FileNotFoundError, RuntimeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def run(args) -> int:
    from ovseg.apps.arguments import (
        load_predictor_from_arguments,
        load_sam_from_arguments,
        say_precision,
    )
    from ovseg.model_zoo import model_caveat
    from ovseg.threads import set_threads
    from ovseg.vocabulary import as_vocabulary, describe_guessed_kinds, parse_class_list

    check_arguments(args)
    set_threads(args.threads)
    info = _join_torchrun(args)
    vocabulary = None  # heat maps only
    if args.classes is not None:
        vocabulary = parse_class_list(args.classes)
    elif args.vocab is not None:
        vocabulary = as_vocabulary(args.vocab)
    out_dir = Path(args.output)
    todo, bad, skipped, warnings = plan_inputs(args, vocabulary, out_dir)
    if skipped and info.is_main:
        print(
            f"skipping {skipped} input(s) whose outputs exist, made with the same model, "
            "classes, task and sizes (--overwrite to redo)",
            file=sys.stderr,
        )
    if bad and not todo:
        if len(bad) == 1:
            raise UsageError(str(bad[0][1]))
        raise UsageError(f"none of the {len(bad)} inputs can be read (first: {bad[0][1]})")
    if info.enabled:  # under torchrun: every world_size-th input, the same plan on every rank
        todo = todo[info.rank :: info.world_size]
        bad = bad if info.is_main else []
    for _, error in bad:
        print(f"error: {error} (skipped)", file=sys.stderr)
    for line in warnings if info.is_main else []:
        print(line, file=sys.stderr)
    if not todo and not info.enabled:
        return 0
    created = check_writable(out_dir)
    try:
        if args.onnx is not None:
            from ovseg.export import OnnxPredictor

            predictor = OnnxPredictor(args.onnx, max_output_pixels=args.max_output_pixels)
            print(f"ovseg: ONNX Runtime, export {args.onnx}", file=sys.stderr)
        else:
            predictor = load_predictor_from_arguments(
                args, log=print, max_output_pixels=args.max_output_pixels
            )
            say_precision(predictor)
        _say_short_side_cap(predictor, args.short_side, info.is_main)
        args.sam_masks = load_sam_from_arguments(args, predictor.device)
        if args.prompts is not None and args.sam_masks is None:
            if predictor.model.prompt_head is None:
                raise UsageError(
                    f"model {predictor.model_name} has no prompt head for --points / --boxes: "
                    "add --masks sam (with SAM weights), or use a model with one (synthetic_tiny)"
                )
        if vocabulary is not None:
            predictor.set_vocabulary(vocabulary)
            kinds = describe_guessed_kinds(predictor.vocabulary)
            if kinds:
                print(f"ovseg: {kinds}", file=sys.stderr)
            caveat = model_caveat(predictor.model_name, predictor.vocabulary.classes)
            if caveat:
                print(f"ovseg: {caveat}", file=sys.stderr)
            _say_cut_class_names(predictor)
        failures = segment_all(predictor, todo, args, info)
    finally:
        if created and not info.enabled and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that wrote nothing leaves no empty folder behind
    failures += len(bad)
    total = len(todo) + len(bad)
    if info.enabled:
        from ovseg.distributed import all_reduce_sum, cleanup

        failures = int(all_reduce_sum(failures, info))
        total = int(all_reduce_sum(total, info))
        cleanup(info)
    if failures:
        if info.is_main:
            print(f"{failures} of {total} input(s) failed", file=sys.stderr)
        return 1
    return 0


def _say_short_side_cap(predictor, short_side: int | None, is_main: bool) -> None:
    """One warning line when --short-side can never be reached: the model's long-side limit
    (``max_size_test``) caps every image below it."""
    longest = predictor.inference.max_size_test
    if short_side is not None and short_side > longest and is_main:
        print(
            f"ovseg: warning: --short-side {short_side} is above the model's long-side limit "
            f"of {longest} pixels: images are resized to {longest} on their long side (short "
            "side less)",
            file=sys.stderr,
        )


def _say_cut_class_names(predictor) -> None:
    """One warning line naming the class names too long for the text encoder's context
    (the tokenizer cuts them: only their first part is read)."""
    encoder = getattr(predictor, "text_encoder", None)
    if encoder is None:  # ONNX Runtime: its tokenizer cuts the same way, unsaid
        return
    cut = encoder.cut_texts(predictor.vocabulary.synonyms)
    if cut:
        names = ", ".join(f"'{name[:40]}...'" if len(name) > 40 else f"'{name}'" for name in cut)
        print(
            f"ovseg: warning: class name(s) {names} exceed the text encoder's "
            f"{encoder.backbone.text_context_length}-token context and are truncated: only "
            "their first part is read (shorten them)",
            file=sys.stderr,
        )


def _join_torchrun(args):
    """Under torchrun (WORLD_SIZE > 1): join the group, each process on its own device (GPU =
    local rank) and a share of the inputs; else a one-process :class:`DistInfo`."""
    import os

    from ovseg.distributed import DistInfo, init_distributed

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if args.onnx is not None:
        raise UsageError("--onnx runs in one process: drop torchrun")
    info = init_distributed(args.device)
    args.device = str(info.device)
    return info
