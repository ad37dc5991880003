"""``python -m core explain``: one patch, one method; writes the map (.npy) and an overlay (.png).

    python -m core explain --model models/demo-tiny.pt --image patch.png --method gradcam --out map.npy --png map.png
    python -m core explain --model best.pt slide.svs --x 20480 --y 11264 --method lime --n-samples 500 --out lime.npy

The patch comes from an image file (``--image PATCH.png``) or from a slide (``SLIDE --x X --y Y``,
level-0 top-left corner; size and level default to the checkpoint's ``patch_size`` and
``level``). Method parameters have their own flags; ``--param KEY=VALUE`` sets any other.
The defaults shown by ``--help`` are the methods' own (``Explainer.defaults`` in
:mod:`core.explain`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli import common
from core.errors import CommandError

HELP = "explain one patch with one method (saliency, smoothgrad, gradcam, occlusion, lime, ig): map .npy + overlay .png"

# flag dest -> (parameter name, methods it applies to; None: all)
_FLAGS = {
    "layer": ("layer", ("gradcam",)),
    "target": ("target", None),
    "precision": ("precision", None),
    "reduce": ("reduce", ("saliency", "smoothgrad")),
    "n_samples": ("n_samples", ("smoothgrad", "lime")),
    "noise": ("noise", ("smoothgrad",)),
    "smooth": ("smooth_sigma", ("gradcam",)),
    "window": ("window", ("occlusion",)),
    "stride": ("stride", ("occlusion",)),
    "baseline": ("baseline", ("occlusion", "ig")),
    "segments": ("n_segments", ("lime",)),
    "compactness": ("compactness", ("lime",)),
    "sigma": ("sigma", ("lime",)),
    "hide_color": ("hide_color", ("lime",)),
    "num_features": ("num_features", ("lime",)),
    "steps": ("n_steps", ("ig",)),
    "blur_sigma": ("blur_sigma", ("ig",)),
    "batch_size": ("batch_size", ("smoothgrad", "occlusion", "lime", "ig")),
    "seed": ("seed", ("smoothgrad", "lime")),
}


def _shown(value) -> str:
    """Return a default as the help shows it: 0.15, 10, 128,128,128."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``explain``; the defaults in the help are the methods' own."""
    from core.explain import METHODS, TARGETS

    d = {name: {k: _shown(v) for k, v in method.defaults.items()} for name, method in METHODS.items()}
    fp32_only = [name for name, method in METHODS.items() if method.pixel_gradient]
    no_logit = [name for name, method in METHODS.items() if "logit" not in method.choices.get("target", TARGETS)]
    target_default = d["saliency"]["target"]

    parser.add_argument("--model", required=True, type=Path, help="checkpoint file (.pt)")
    parser.add_argument("slide", nargs="?", type=Path, help="slide file to read the patch from (with --x, --y)")
    parser.add_argument("--image", type=Path, help="patch image file (PNG, JPEG, TIFF), instead of SLIDE")
    parser.add_argument("--x", type=int, help="patch left edge, level-0 px (with SLIDE)")
    parser.add_argument("--y", type=int, help="patch top edge, level-0 px (with SLIDE)")
    parser.add_argument("--level", type=int, help="read the patch at this pyramid level (default: at the checkpoint's resolution in um/px, else its level)")
    parser.add_argument("--size", type=int, help="patch side in px given to the model (default: the checkpoint's patch_size)")
    common.add_slide_mpp(parser)
    # Validated by the method, not by argparse, so a bad value gives one line, not a usage block.
    parser.add_argument("--method", required=True, help=" | ".join(METHODS))
    parser.add_argument("--layer", help="Grad-CAM layer, e.g. features.28 (default: the last conv layer)")
    parser.add_argument(
        "--target",
        help=" | ".join(f"{t} (default)" if t == target_default else t for t in TARGETS) + f" (logit not for {', '.join(no_logit)})",
    )
    common.add_precision(
        parser, default=None, note=f"default {d['saliency']['precision']}; {', '.join(fp32_only)} always run in fp32",
    )
    common.add_device(parser)
    g = parser.add_argument_group("method parameters (each applies to the methods named)")
    g.add_argument("--reduce", help=f"saliency, smoothgrad: {' | '.join(METHODS['saliency'].choices['reduce'])} over the colour channels")
    g.add_argument(
        "--n-samples", "--samples", "--num-samples", dest="n_samples", type=int, metavar="N",
        help=f"smoothgrad: number of noisy copies (default {d['smoothgrad']['n_samples']}); "
        f"lime: random on/off samples (default {d['lime']['n_samples']})",
    )
    g.add_argument("--noise", type=float, help=f"smoothgrad: noise standard deviation, image units 0..1 (default {d['smoothgrad']['noise']})")
    g.add_argument("--smooth", type=float, help=f"gradcam: Gaussian smoothing of the map, px (default {d['gradcam']['smooth_sigma']})")
    g.add_argument("--window", type=int, help=f"occlusion: window side, px (default {d['occlusion']['window']})")
    g.add_argument("--stride", type=int, help=f"occlusion: window step, px (default {d['occlusion']['stride']})")
    g.add_argument(
        "--baseline",
        help=f"occlusion: fill value 0..1 (default {d['occlusion']['baseline']}); "
        f"ig: {' | '.join(METHODS['ig'].choices['baseline'])} (default {d['ig']['baseline']})",
    )
    g.add_argument("--segments", type=int, help=f"lime: SLIC n_segments (default {d['lime']['n_segments']})")
    g.add_argument("--compactness", type=float, help=f"lime: SLIC compactness (default {d['lime']['compactness']})")
    g.add_argument("--sigma", type=float, help=f"lime: SLIC pre-smoothing sigma (default {d['lime']['sigma']})")
    g.add_argument(
        "--hide-color", help=f"lime: fill of removed superpixels, R,G,B 0..255 or 'mean' (default {d['lime']['hide_color']})"
    )
    g.add_argument("--num-features", type=int, help=f"lime: superpixels kept by the sparse surrogate (default {d['lime']['num_features']})")
    g.add_argument("--steps", type=int, help=f"ig: integration points (default {d['ig']['n_steps']})")
    g.add_argument("--blur-sigma", type=float, help=f"ig: blur of the 'blurred' baseline, px (default {d['ig']['blur_sigma']})")
    batched = _FLAGS["batch_size"][1]
    g.add_argument(
        "--batch-size", type=int,
        help=f"{', '.join(batched)}: samples per forward (default {', '.join(d[m]['batch_size'] for m in batched)})",
    )
    g.add_argument("--seed", type=int, help=f"smoothgrad, lime: random seed (default {d['smoothgrad']['seed']})")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="any other method parameter (JSON value), repeatable")
    parser.add_argument("--out", required=True, type=Path, help="where to write the map (.npy, H x W float32)")
    parser.add_argument("--png", type=Path, help="also write the map over the patch as a PNG")


def method_params(args: argparse.Namespace) -> dict:
    """Return the method parameters given on the command line (only those given).

    Returns:
        Parameter name -> value, ready for ``explain_patch(model, image, args.method, **params)``.

    Raises:
        ExplainError: unknown method. CommandError: a flag that does not apply to the method,
        or a malformed value.
    """
    from core.explain import METHODS, ExplainError

    method = args.method
    if method not in METHODS:
        raise ExplainError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    params: dict = {}
    for dest, (name, methods) in _FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if methods is not None and method not in methods:
            raise CommandError(f"--{dest.replace('_', '-')} does not apply to {method} (it is for {', '.join(methods)})")
        params[name] = value
    if "baseline" in params and method == "occlusion":
        try:
            params["baseline"] = float(params["baseline"])
        except ValueError:
            raise CommandError(f"--baseline for occlusion is a number 0..1, got {params['baseline']!r}") from None
    if "hide_color" in params:
        text = params["hide_color"].strip().lower()
        if text == "mean":
            params["hide_color"] = None
        else:
            try:
                params["hide_color"] = [int(v) for v in text.split(",")]
            except ValueError:
                raise CommandError(f"--hide-color is R,G,B (0..255) or 'mean', got {args.hide_color!r}") from None
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word: a string
        params[key.strip()] = value
    return params


def _read_patch(args: argparse.Namespace, metadata: dict):
    """Return the patch (H x W x 3 uint8) and a description of where it came from."""
    import numpy as np

    from core.explain import ExplainError

    if (args.image is None) == (args.slide is None):
        raise CommandError("give either --image PATCH or SLIDE --x X --y Y (exactly one)")
    if args.image is not None:
        if any(v is not None for v in (args.x, args.y, args.level, args.size, args.mpp)):
            raise CommandError("--x, --y, --level, --size and --mpp go with SLIDE, not with --image")
        from core.slide_io import read_image_rgb

        if not args.image.exists() and not args.image.is_symlink():
            raise ExplainError(f"patch image '{args.image}' not found")
        # 16-bit grey is scaled to 8 bits; float data and images of more than PIL's ~89 Mpx are refused.
        return read_image_rgb(args.image), {"image": str(args.image)}
    if args.x is None or args.y is None:
        raise CommandError("SLIDE needs --x and --y (level-0 px of the patch's top-left corner)")
    from core.slide_io import open_slide

    from core.inference import model_tiling
    from core.tiling import read_patches, read_plan

    size = args.size if args.size is not None else metadata.get("patch_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise CommandError("the checkpoint has no patch_size; pass --size")
    slide = open_slide(args.slide)
    width, height = slide.dimensions
    if not (0 <= args.x < width and 0 <= args.y < height):
        raise CommandError(f"the patch corner ({args.x}, {args.y}) lies outside the slide ({width} x {height} px at level 0)")
    # The patch as `predict` cuts it: at the checkpoint's resolution (or --level), resized to its input.
    plan = read_plan(slide, model_tiling(metadata, level=args.level, patch_size=size), args.mpp)
    image = read_patches(slide, np.array([args.x]), np.array([args.y]), plan)[0]
    level = plan.level
    return image, {"slide": str(args.slide), "x": args.x, "y": args.y, "level": level, "size": size}


def run(args: argparse.Namespace) -> int:
    """Load the model, read the patch, explain it, write the map and the overlay; return 0."""
    import numpy as np

    from core.device import resolve_device
    from core.explain import explain_patch
    from core.model import load_checkpoint

    params = method_params(args)
    if args.out.suffix.lower() != ".npy":
        raise CommandError(f"--out must end in .npy, got '{args.out}'")
    if args.png is not None and args.png.suffix.lower() != ".png":
        raise CommandError(f"--png must end in .png, got '{args.png}'")
    device = resolve_device(args.device)
    model, metadata = load_checkpoint(args.model, map_location=device)
    image, source = _read_patch(args, metadata)
    explanation = explain_patch(model, image, args.method, **params)
    from core.fileio import atomic_write

    with atomic_write(args.out) as handle:
        np.save(handle, explanation.map)
    summary = {**explanation.summary(), "patch": source, "model_id": metadata.get("model_id"), "out": str(args.out)}
    if args.png is not None:
        from PIL import Image

        with atomic_write(args.png) as handle:
            Image.fromarray(explanation.overlay(image)).save(handle, format="PNG")
        summary["png"] = str(args.png)
    print(json.dumps(summary, default=str))
    print(
        f"{args.method}: F(I) = {explanation.probability:.4f}, {explanation.seconds:.2f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0
