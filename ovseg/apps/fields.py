"""``ovseg fields`` (and ``tools/fields.py``): 3D and 4D language fields, LangSplat-style, on CPU.

    ovseg fields world runs/world3d --scenes 3          # synthetic posed scenes, offline
    ovseg fields fit runs/world3d/scene_000 --out runs/field_000
    ovseg fields query runs/field_000 --text star --text water --out runs/queries --ply
    ovseg fields world4d runs/world4d                   # synthetic multi-view video + captions
    ovseg fields fit runs/world4d/scene_000 --out runs/field4d_000        # times: a 4D field
    ovseg fields query runs/field4d_000 --text star --state "a red star" --video --out runs/q4
    ovseg fields lift SCENE --splat point_cloud.ply --out runs/lifted   # your own 3DGS splat
    ovseg fields query runs/lifted --text star --out runs/q --extract runs/star.ply

``fit`` reads COLMAP models (sparse/0, text or binary) and nerfstudio / Blender
transforms.json; it resumes an interrupted fit in the same --out folder. ``query`` renders
any of the scene's views (held-out ones by default), writes a heat map and a mask per phrase,
and with --ply the Gaussians coloured by relevancy, without refitting. ``lift`` needs no
training: it lifts ovseg's 2D features onto a Gaussian splat you already have (any 3DGS
trainer's PLY, or a field folder of ``fit``) with the splat's own blending weights
(Occam's LGS), resumable view by view; ``query --extract FILE.ply`` then writes the Gaussians
a phrase selects as a 3DGS PLY.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from ovseg.apps.arguments import add_keep_novel_argument, add_model_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from ovseg.apps import fields4d

    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{world,world4d,fit,lift,query}"
    )
    world = commands.add_parser("world", help="write synthetic 3D scenes (transforms.json)")
    world.add_argument("out", help="folder for scene_000, scene_001, ...")
    world.add_argument("--scenes", type=int, default=3)
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--train-views", type=int, default=24)
    world.add_argument("--test-views", type=int, default=6)
    world.add_argument(
        "--gaussians",
        type=int,
        help="also write each scene's ground-truth "
        "splat of this many Gaussians (splat.ply, 3DGS layout)",
    )
    world.add_argument(
        "--size",
        default="160x128",
        help="view size WxH (other than 160x128: rendered from the splat)",
    )
    world.add_argument(
        "--views-from-splat",
        action="store_true",
        help="render the views from the splat (needs --gaussians; fast at "
        "any size) instead of ray-marching the scene",
    )

    fields4d.add_world4d_parser(commands)
    fit = commands.add_parser(
        "fit", help="fit a language field to a posed scene (a 4D one when its frames have times)"
    )
    fit.add_argument("scene", help="scene folder (COLMAP sparse/0 or transforms.json)")
    fit.add_argument("--out", required=True, help="the field folder (resumed if it exists)")
    add_model_arguments(fit)
    add_keep_novel_argument(fit)
    fit.add_argument("--iterations", type=int, default=600, help="colour-fit iterations")
    fit.add_argument(
        "--language-iterations",
        type=int,
        help="language-fit iterations (default: about 11 visits to each training "
        "view, at least 300)",
    )
    fit.add_argument("--scale", type=float, default=1.0, help="fit the views at this scale")
    fit.add_argument(
        "--mask-vocabulary",
        help="vocabulary whose panoptic segments are the masks (default: a toy model's own "
        "world, else coco_panoptic); queries are not limited to it",
    )
    fit.add_argument(
        "--levels",
        default="panoptic",
        help="mask levels, comma-separated: panoptic (the panoptic segments) and small, "
        "medium, large (LangSplat's SAM levels, from the model's prompt head); each adds a "
        "3-channel latent (default: panoptic)",
    )
    fit.add_argument("--threads", type=int, help="torch threads")
    fit.add_argument("--no-progress", action="store_true")
    fields4d.add_fit4d_arguments(fit)

    lift = commands.add_parser(
        "lift",
        help="lift ovseg's features onto an existing Gaussian splat, no training (Occam's LGS)",
    )
    lift.add_argument(
        "scene",
        help="scene folder with the views the splat was trained on "
        "(COLMAP sparse/0, transforms.json)",
    )
    lift.add_argument(
        "--splat",
        required=True,
        help="the splat: a 3DGS PLY (point_cloud.ply) or a field folder from 'ovseg fields fit'",
    )
    lift.add_argument("--out", required=True, help="the field folder (resumed if it exists)")
    lift.add_argument(
        "--cameras",
        help="3DGS's cameras.json (from the splat's output folder) "
        "instead of SCENE's poses; images from SCENE/images or SCENE",
    )
    add_model_arguments(lift)
    add_keep_novel_argument(lift)
    lift.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="rasterize the views at this scale (0 < scale <= 1)",
    )
    lift.add_argument(
        "--mask-vocabulary",
        help="vocabulary whose panoptic segments are the "
        "masks (default: a toy model's own world, else coco_panoptic)",
    )
    lift.add_argument("--mixture", type=int, default=8, help="segments kept per Gaussian")
    lift.add_argument(
        "--min-weight",
        type=float,
        default=0.05,
        help="Gaussians whose blending weights sum below this (pixels) get no feature",
    )
    lift.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="N",
        help="N least-squares passes over the views after the average (Splat Feature Solver; "
        "each costs about one more lift; default 0: measured no more accurate, see README)",
    )
    lift.add_argument(
        "--refine-rank",
        type=int,
        default=32,
        help="size of the basis the refinement's corrections live in (default 32)",
    )
    lift.add_argument("--threads", type=int, help="torch and numba threads")
    lift.add_argument("--no-progress", action="store_true")

    query = commands.add_parser("query", help="heat maps, masks and PLY for text queries")
    query.add_argument("field", help="a fitted field folder")
    query.add_argument("--text", action="append", help="a phrase (repeatable)")
    query.add_argument("--out", required=True, help="output folder")
    query.add_argument(
        "--view",
        action="append",
        help="view name (repeatable; default: the held-out views); for a 4D field a camera id "
        "(c02) or a frame's name (default: the first held-out camera)",
    )
    query.add_argument("--size", type=int, help="render at this width (height follows)")
    query.add_argument("--ply", action="store_true", help="also write relevancy-coloured PLY")
    query.add_argument(
        "--extract",
        metavar="FILE.ply",
        help="write the Gaussians the (one) --text selects (relevancy > 0.5) as a 3DGS PLY",
    )
    add_model_arguments(query)
    fields4d.add_query4d_arguments(query)
    return parser


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    from ovseg.fields.posed_images import PosedImagesError

    try:
        if getattr(args, "threads", None):
            import numba
            import torch

            if args.threads < 1:
                raise ValueError("--threads must be >= 1")
            torch.set_num_threads(args.threads)
            numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        commands = {
            "world": _world,
            "world4d": _world4d,
            "fit": _fit,
            "lift": _lift,
            "query": _query,
        }
        with _writable_outputs(args):  # before any work
            return commands[args.command](args)
    except (PosedImagesError, ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


def _writable_outputs(args):
    """The command's output folder (and --extract's) checked writable (UsageError, a
    ValueError, if not); removed on the way out when made here and left empty."""
    from ovseg.apps.outputs import check_writable, writable_folder

    if getattr(args, "extract", None):
        check_writable(Path(args.extract).absolute().parent, option="--extract")
    return writable_folder(args.out, option="OUT" if args.command.startswith("world") else "--out")


def _world(args) -> int:
    from ovseg.synthetic.splat3d import scene_splat, write_splat_world
    from ovseg.synthetic.world3d import make_scene3d, write_scene3d

    if args.scenes < 1 or args.train_views < 2 or args.test_views < 1:
        raise ValueError("--scenes >= 1, --train-views >= 2 and --test-views >= 1, please")
    if args.gaussians is not None and args.gaussians < 100:
        raise ValueError("--gaussians must be at least 100")
    width, height = _size(args.size)
    from_splat = args.views_from_splat or (width, height) != (160, 128)
    if from_splat and args.gaussians is None:
        raise ValueError(
            "views other than 160x128 are rendered from the splat: add --gaussians N (e.g. 300000)"
        )
    for index in range(args.scenes):
        out = Path(args.out) / f"scene_{index:03d}"
        if from_splat:
            write_splat_world(
                out,
                args.seed,
                index,
                gaussians=args.gaussians,
                train_views=args.train_views,
                test_views=args.test_views,
                width=width,
                height=height,
            )
        else:
            write_scene3d(
                out, args.seed, index, train_views=args.train_views, test_views=args.test_views
            )
            if args.gaussians is not None:
                from ovseg.fields.splat_ply import write_splat

                splat, _ = scene_splat(
                    make_scene3d(args.seed, index), args.gaussians, seed=args.seed
                )
                write_splat(out / "splat.ply", splat)
        print(f"wrote {out}")
    return 0


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 16 for p in parts):
        raise ValueError(f"--size must be WxH with both at least 16, got '{text}'")
    return int(parts[0]), int(parts[1])


def _lift(args) -> int:
    from ovseg.apps.arguments import load_predictor_from_arguments
    from ovseg.fields.lift import (
        LiftConfig,
        check_cameras_see,
        lift_field,
        lift_scene,
        read_splat_source,
    )

    if not 0 < args.scale <= 1 or args.mixture < 1 or args.min_weight < 0:
        raise ValueError("0 < --scale <= 1, --mixture >= 1 and --min-weight >= 0, please")
    if args.refine < 0 or args.refine_rank < 1:
        raise ValueError("--refine >= 0 and --refine-rank >= 1, please")
    scene = lift_scene(args.scene, args.cameras)  # bad input fails before the model loads
    splat = read_splat_source(args.splat)
    cameras = [scene.cameras[i] for i in scene.split("train")]
    check_cameras_see(splat, cameras)
    predictor = load_predictor_from_arguments(args, log=print)
    cfg = LiftConfig(
        mixture=args.mixture,
        min_weight=args.min_weight,
        image_scale=args.scale,
        mask_vocabulary=args.mask_vocabulary,
        refine_iterations=args.refine,
        refine_rank=args.refine_rank,
    )
    meta = lift_field(
        args.scene,
        args.splat,
        args.out,
        predictor,
        cfg,
        scene=scene,
        splat=splat,
        cameras_json=args.cameras,
        progress=not args.no_progress,
    )
    times = meta["timings_s"]
    print(
        f"lifted {args.out}: {meta['lifted_gaussians']} of {meta['gaussians']} Gaussians from "
        f"{len(meta['train_views'])} views ({meta['segments']} segments); 2D features "
        f"{times.get('features', 0) / 60:.1f} min, lifting {times.get('lift', 0) / 60:.1f} min"
        + (f", refining {times['refine'] / 60:.1f} min" if "refine" in times else "")
    )
    return 0


def _world4d(args) -> int:
    from ovseg.apps.fields4d import world4d

    return world4d(args)


def _fit(args) -> int:
    from ovseg.apps.arguments import load_predictor_from_arguments
    from ovseg.fields.field import FieldConfig, fit_field
    from ovseg.fields.fit import LatentFitConfig, colour_config, language_iterations
    from ovseg.fields.posed_images import load_posed_images

    language = args.language_iterations
    if args.iterations < 1 or (language is not None and language < 1) or not 0 < args.scale <= 1:
        raise ValueError("--iterations and --language-iterations >= 1, 0 < --scale <= 1, please")
    _levels(args.levels)
    scene = load_posed_images(args.scene)  # a bad scene fails first
    dynamic = scene.times is not None
    if language is None:
        args.language_iterations = language_iterations(len(scene.split("train")))
    if not dynamic and args.captions:
        raise ValueError("--captions is for dynamic scenes (frames with times); this one has none")
    if dynamic and args.levels != "panoptic":
        raise ValueError("--levels: a 4D field uses the panoptic level only")
    if dynamic:
        from ovseg.apps.fields4d import check_fit4d_extras

        check_fit4d_extras(args)  # now, not after the colour and language fits
    predictor = load_predictor_from_arguments(args, log=print)
    if dynamic:
        from ovseg.apps.fields4d import fit4d

        return fit4d(args, predictor)
    cfg = FieldConfig(
        colour=colour_config(args.iterations),
        language=LatentFitConfig(iterations=args.language_iterations),
        image_scale=args.scale,
        levels=_levels(args.levels),
        mask_vocabulary=args.mask_vocabulary,
    )
    meta = fit_field(args.scene, args.out, predictor, cfg, progress=not args.no_progress)
    total = sum(meta["timings_s"].values())
    print(
        f"fitted {args.out}: {meta['gaussians']} Gaussians, colour L1+SSIM loss "
        f"{meta['colour_loss']:.4f}, latent L1 {meta['language_loss']:.4f}, "
        f"{total / 60:.1f} min"
    )
    return 0


def _levels(text: str) -> tuple[str, ...]:
    from ovseg.fields.language import LEVELS

    levels = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [level for level in levels if level not in LEVELS]
    if not levels or unknown:
        raise ValueError(
            f"--levels: unknown or no level {', '.join(unknown)}; choose from {', '.join(LEVELS)}"
        )
    return levels


def _query(args) -> int:
    import numpy as np
    from PIL import Image

    from ovseg.apps.arguments import load_text_model_from_arguments
    from ovseg.apps.outputs import slug
    from ovseg.fields.posed_images import view_file_stem
    from ovseg.fileio import atomic_write
    from ovseg.heatmap import check_phrases
    from ovseg.visualize import draw_heatmap

    phrases = check_phrases(args.text) if args.text else []
    if args.size is not None and args.size < 16:
        raise ValueError("--size must be at least 16 pixels")
    from ovseg.fields.field4d import DynamicField
    from ovseg.fields.kinds import field_class

    kind = field_class(args.field)
    kind.read_meta(args.field)  # a wrong folder fails before the model loads
    if kind is DynamicField:
        from ovseg.apps.fields4d import query4d

        if not phrases and not args.state:
            raise ValueError("give a --text or a --state to query")
        if args.ply:
            raise ValueError("--ply writes a 3D field's Gaussians; a 4D field's move over time")
        return query4d(args, load_text_model_from_arguments(args, log=print), phrases)
    if args.time or args.state or args.video:
        raise ValueError(
            f"{args.field} is a 3D field: --time, --state and --video need a 4D "
            "one (fitted on frames with times)"
        )
    if not phrases:
        raise ValueError("give at least one --text")
    if args.extract and len(phrases) != 1:
        raise ValueError("--extract writes the Gaussians of one phrase: give one --text")
    if args.extract and not args.extract.endswith(".ply"):
        raise ValueError(f"--extract must name a .ply file, got '{args.extract}'")
    # a query needs phrase embeddings alone: the model's text half, not its image network
    field = kind.load(args.field, load_text_model_from_arguments(args, log=print))
    scene = field.scene()
    by_name = {camera.name: index for index, camera in enumerate(scene.cameras)}
    names = (
        args.view or [scene.cameras[i].name for i in scene.split("test")] or [scene.cameras[0].name]
    )
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"no view named {', '.join(unknown)} in {field.meta['scene']}; views are "
            f"{', '.join(list(by_name)[:8])}{' ...' if len(by_name) > 8 else ''}"
        )
    out = Path(args.out)
    written = 0
    for name in names:
        camera = scene.cameras[by_name[name]]
        if args.size is not None:
            camera = camera.scaled(args.size / camera.width)
        result = field.relevancy(camera, phrases)
        rgb = (result["rgb"].numpy() * 255).round().astype(np.uint8)
        file_stem = view_file_stem(name)
        atomic_write(
            out / f"{file_stem}_render.png",
            lambda tmp, a=rgb: Image.fromarray(a).save(tmp, format="PNG"),
        )
        for number, phrase in enumerate(phrases, 1):
            scores = result["relevancy"][number - 1].numpy()
            stem = f"{file_stem}_{number}{slug(phrase)}"
            picture = draw_heatmap(rgb, scores, phrase, note=f"field {Path(args.field).name}")
            atomic_write(
                out / f"{stem}_heatmap.png", lambda tmp, p=picture: p.save(tmp, format="PNG")
            )
            mask = ((scores > 0.5) * 255).astype(np.uint8)
            atomic_write(
                out / f"{stem}_mask.png",
                lambda tmp, m=mask: Image.fromarray(m).save(tmp, format="PNG"),
            )
            written += 2
    if args.ply:
        for number, phrase in enumerate(phrases, 1):
            count = field.export_ply(out / f"relevancy_{number}{slug(phrase)}.ply", phrase)
            print(f"ply: {count} Gaussians for '{phrase}'")
    if args.extract:
        count = field.extract(args.extract, phrases[0])
        print(f"extract: {count} Gaussians for '{phrases[0]}' in {args.extract}")
    print(f"wrote {written + len(names)} images for {len(names)} view(s) to {out}")
    return 0
