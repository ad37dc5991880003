"""core.slide_io on real OpenSlide: generated pyramids and the openslide-python fixtures."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from core import slide_io
from core.errors import SlideError
from core.slide_io import Slide, open_slide, rgba_to_rgb


# -- generated slides: exact pixels -----------------------------------------------------------
def test_generated_pyramid_levels_and_mpp(tissue_slide):
    path, image = tissue_slide
    slide = Slide(path)
    assert slide.vendor == "generic-tiff"
    assert slide.dimensions == (2048, 1536)
    assert slide.level_count == 3
    assert slide.level_dimensions == ((2048, 1536), (1024, 768), (512, 384))
    assert slide.level_downsamples == (1.0, 2.0, 4.0)
    assert slide.mpp == pytest.approx(0.5)
    assert slide.info.to_dict()["level_count"] == 3


def test_read_region_level0_exact(tissue_slide):
    path, image = tissue_slide
    slide = Slide(path)
    region = slide.read_region((500, 250), 0, (64, 32))
    assert region.dtype == np.uint8 and region.shape == (32, 64, 3)
    np.testing.assert_array_equal(region, image[250:282, 500:564])


def test_read_region_level1_uses_level0_location(tissue_slide):
    path, image = tissue_slide
    slide = Slide(path)
    region = slide.read_region((512, 256), 1, (100, 50))
    # Level 1 was written as image[::2, ::2]; level-0 location (512, 256) is level-1 (256, 128).
    np.testing.assert_array_equal(region, image[::2, ::2][128:178, 256:356])


def test_outside_the_slide_is_white(tissue_slide):
    path, _ = tissue_slide
    region = Slide(path).read_region((2000, 1500), 0, (100, 100))
    assert (region[60:, 60:] == 255).all()


def test_rgba_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black stays black
    rgba[1, 0] = (100, 0, 200, 128)  # half transparent: mixed with white
    rgb = rgba_to_rgb(rgba)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [0, 0, 0]
    assert rgb[1, 0].tolist() == [177, 127, 227]


def test_thumbnail_and_read_level(tissue_slide):
    path, image = tissue_slide
    slide = Slide(path)
    thumb = slide.thumbnail(256)
    assert max(thumb.shape[:2]) == 256 and thumb.shape[2] == 3
    np.testing.assert_array_equal(slide.read_level(2), image[::4, ::4])


def test_bad_level_and_size(tissue_slide):
    slide = Slide(tissue_slide[0])
    with pytest.raises(SlideError, match="level 5 does not exist"):
        slide.read_region((0, 0), 5, (10, 10))
    with pytest.raises(SlideError, match="positive"):
        slide.read_region((0, 0), 0, (0, 10))


def test_closed_slide_refuses_reads(tissue_slide):
    slide = Slide(tissue_slide[0])
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (8, 8))


def test_concurrent_reads_equal_serial_reads(tissue_slide):
    path, image = tissue_slide
    slide = open_slide(path)
    locations = [(x, y) for x in range(0, 1900, 150) for y in range(0, 1400, 200)]
    results: dict = {}

    def read(chunk):
        for loc in chunk:
            results[loc] = slide.read_region(loc, 0, (96, 96))

    threads = [threading.Thread(target=read, args=(locations[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in locations:
        expected = np.full((96, 96, 3), 255, np.uint8)
        part = image[y : y + 96, x : x + 96]
        expected[: part.shape[0], : part.shape[1]] = part
        np.testing.assert_array_equal(results[(x, y)], expected)


def test_open_slide_caches_and_reopens_changed_files(tissue_slide, tmp_path):
    path = tmp_path / "copy.tiff"
    shutil.copy(tissue_slide[0], path)
    first = open_slide(path)
    assert open_slide(path) is first
    from tests.conftest import tissue_image, write_pyramid

    write_pyramid(path, tissue_image(width=1024, height=1024, box=(0, 0, 512, 512)), levels=2)
    second = open_slide(path)
    assert second is not first and second.dimensions == (1024, 1024)


# -- bad files ----------------------------------------------------------------------------------
def test_missing_file():
    with pytest.raises(SlideError, match="slide not found"):
        open_slide("/nonexistent/slide.svs")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        open_slide(path)


def test_folder_is_not_a_slide(tmp_path):
    with pytest.raises(SlideError, match="not a slide file"):
        Slide(tmp_path)


def test_truncated_tiff(tissue_slide, tmp_path):
    data = tissue_slide[0].read_bytes()
    path = tmp_path / "truncated.tiff"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideError) as info:
        slide = open_slide(path)
        slide.read_region((0, 0), 0, (2048, 1536))
    assert "truncated.tiff" in str(info.value) and "damaged or truncated" in str(info.value)


def test_random_bytes_and_text_files(tmp_path):
    noise = tmp_path / "noise.svs"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    for path in (noise, text):
        with pytest.raises(SlideError, match="OpenSlide can read"):
            open_slide(path)


# -- the real files of openslide-python ----------------------------------------------------------
def test_small_svs_is_aperio(shared_slides):
    slide = Slide(shared_slides / "small.svs")
    assert slide.vendor == "aperio"
    assert slide.level_count >= 1
    assert slide.mpp == pytest.approx(0.499)
    assert "thumbnail" in slide.info.associated_images
    assert slide.associated_image("thumbnail").ndim == 3
    assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)


def test_boxes_tiff_is_generic_tiff(shared_slides):
    slide = Slide(shared_slides / "boxes.tiff")
    assert slide.vendor == "generic-tiff"
    assert slide.dimensions == (300, 250)
    assert slide.level_count == 4


def test_boxes_png_through_image_slide(shared_slides):
    slide = Slide(shared_slides / "boxes.png")
    assert slide.vendor == "image"
    assert slide.mpp is None
    region = slide.read_region((0, 0), 0, (300, 250))
    assert region.shape == (250, 300, 3)
    # The PNG itself, read by PIL, is what OpenSlide's ImageSlide shows.
    from PIL import Image

    expected = rgba_to_rgb(Image.open(shared_slides / "boxes.png").convert("RGBA"))
    np.testing.assert_array_equal(region, expected)


def test_dicom_opens(shared_slides):
    slide = Slide(shared_slides / "boxes_0.dcm")
    assert slide.vendor == "dicom"


def test_unopenable_tiff(shared_slides):
    with pytest.raises(SlideError, match="unsupported or corrupt"):
        Slide(shared_slides / "unopenable.tiff")


def test_unreadable_svs_fails_on_read_and_is_dropped_from_cache(shared_slides):
    slide = open_slide(shared_slides / "unreadable.svs")
    with pytest.raises(SlideError, match="cannot decode"):
        slide.read_region((0, 0), 0, (16, 16))
    with pytest.raises(SlideError, match="unusable"):
        slide.read_region((0, 0), 0, (16, 16))
    # A later open gets a fresh handle instead of the broken one.
    assert open_slide(shared_slides / "unreadable.svs") is not slide


def test_info_cli_json(shared_slides, capsys):
    from core.cli import main

    assert main(["info", str(shared_slides / "small.svs")]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["vendor"] == "aperio" and data["mpp"] == pytest.approx(0.499)
    assert main(["info", str(shared_slides / "unopenable.tiff")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, core.slide_io, core.tiling, core.tissue, core.annotations; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=slide_io.__file__.rsplit("/core/", 1)[0])
    assert out.stdout.strip() == "False"
