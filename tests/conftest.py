"""Shared fixtures: slides made by the tests, and the real files in ../shared/testdata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SHARED_SLIDES = ROOT.parent / "shared" / "testdata" / "openslide"

PINK = (230, 150, 200)


def write_pyramid(path: Path, image: np.ndarray, *, levels: int = 3, tile: int = 128, mpp: float | None = 0.5, compression: str | None = "zlib") -> Path:
    """Write ``image`` as a tiled pyramidal TIFF OpenSlide opens as generic-tiff.

    One ``write`` per level, ``subfiletype=1`` on reduced levels; each level is the previous
    one halved by taking every second pixel (exact, so tests can predict level reads).
    """
    kwargs = dict(photometric="rgb", tile=(tile, tile), compression=compression, metadata=None)
    with tifffile.TiffWriter(path) as tif:
        level_image = image
        for level in range(levels):
            extra = {}
            if mpp is not None:
                res = 1e4 / (mpp * 2**level)
                extra = dict(resolution=(res, res), resolutionunit="CENTIMETER")
            tif.write(level_image, subfiletype=1 if level else 0, **kwargs, **extra)
            level_image = level_image[::2, ::2]
    return path


def tissue_image(width: int = 2048, height: int = 1536, box: tuple[int, int, int, int] = (512, 256, 1536, 1024)) -> np.ndarray:
    """Return a white image with one pink rectangle of tissue (x0, y0, x1, y1; level-0 px)."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = PINK
    # A little texture so the slide is not a flat colour.
    rng = np.random.default_rng(0)
    image[y0:y1, x0:x1] = np.clip(image[y0:y1, x0:x1].astype(int) + rng.integers(-8, 9, size=(y1 - y0, x1 - x0, 1)), 0, 255)
    return image


@pytest.fixture(scope="session")
def tissue_slide(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 2048 x 1536 generic TIFF (3 levels, 0.5 um/px) with tissue exactly in (512, 256)-(1536, 1024)."""
    image = tissue_image()
    path = write_pyramid(tmp_path_factory.mktemp("slides") / "rect.tiff", image)
    return path, image


@pytest.fixture(scope="session")
def shared_slides() -> Path:
    """The openslide-python test fixtures in ../shared/testdata (skips when absent)."""
    if not SHARED_SLIDES.is_dir():
        pytest.skip("../shared/testdata/openslide is absent (it exists in the project's CI, not in a user's clone)")
    return SHARED_SLIDES


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    """A tiny synthetic cohort: 4 slides of 2048 px (2 tumor, 2 normal), seed 3."""
    from core.demo import make_demo_cohort

    out = tmp_path_factory.mktemp("demo")
    make_demo_cohort(out, n_slides=4, seed=3, size=2048, workers=1)
    return out


@pytest.fixture(scope="session")
def app_cohort(demo_cohort, tmp_path_factory) -> Path:
    """A copy of the small demo cohort with a test checkpoint (tiny, 64 px at level 1) in models/."""
    import shutil

    import torch

    from core.model import build_model, save_checkpoint

    folder = tmp_path_factory.mktemp("appdata") / "cohort"
    shutil.copytree(demo_cohort, folder)
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        model.classifier.weight.mul_(50)  # outputs that vary visibly with the patch
    (folder / "models").mkdir()
    save_checkpoint(folder / "models" / "test-tiny.pt", model, {"patch_size": 64, "level": 1, "label": "test"})
    return folder


# -- explanations: one small model and one patch with structure, shared by the explain tests -----
@pytest.fixture(scope="module")
def tiny():
    """The tiny CNN, seeded, its near-zero initial head spread so explanation maps are not trivial."""
    import torch

    from core.model import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():  # spread the near-zero initial head so maps are not trivial
        model.classifier.weight.normal_(0.0, 0.05)
        model.classifier.bias.fill_(-0.3)
    return model


@pytest.fixture(scope="module")
def tissue_patch() -> np.ndarray:
    """A 64 px patch with structure: pink background, purple blobs (nuclei-like), a white gap."""
    rng = np.random.default_rng(5)
    image = np.empty((64, 64, 3), dtype=np.uint8)
    image[:] = (230, 160, 200)
    yy, xx = np.mgrid[:64, :64]
    for cy, cx in rng.integers(6, 58, (12, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = (110, 60, 150)
    image[:, 50:56] = (245, 245, 245)
    return np.clip(image.astype(int) + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
