"""A corpus of bad inputs, generated here, run through the command line in-process.

Every case writes a small bad file into ``tmp_path`` (big images are header-only: a TIFF that
declares 100000 x 100000 px with no tile data, a PNG whose header claims a huge size) and runs
it through the subcommands that read it. Each must end clean: exit status 2, exactly one
``error: ...`` line on stderr that names the problem in words, no traceback, and the inputs
(and a results store when one is given) unchanged, byte for byte and mtime.

``predict`` reports a slide that fails on its own line and then counts the failures
(``error: 1 of 1 slides failed``): for it the check is those two lines.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from tests.conftest import tissue_image, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "demo-tiny.pt"


# =========================================================================== helpers


def snapshot(*paths: Path) -> dict:
    """Return path -> (bytes, mtime_ns) of every file at or under ``paths`` (symbolic links as their target text)."""
    out = {}
    for root in map(Path, paths):
        items = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for p in items:
            if p.is_symlink():
                out[p] = ("link", os.readlink(p))
            elif p.is_file():
                out[p] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``python -m core ARGV`` in-process; return (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code: int, err: str, *words: str, lines: int = 1) -> str:
    """Assert one clean failure (``lines`` error lines, the first naming every word); return its first line."""
    assert "Traceback" not in err, err
    assert code == 2, err
    got = err.strip().splitlines()
    assert len(got) == lines, err
    assert all(line.startswith("error: ") for line in got), err
    named = re.sub(r"/[^\s']*/", "/", got[0]).lower()  # folders dropped: tmp_path holds the case's name
    for word in words:
        assert word.lower() in named, (word, got[0])
    return got[0]


def assert_predict_refused(code: int, err: str, *words: str) -> str:
    """Assert ``predict``'s report of one failed slide: the slide's error line, then the count."""
    first = assert_clean_error(code, err, *words, lines=2)
    assert err.strip().splitlines()[1] == "error: 1 of 1 slides failed", err
    return first


def sparse_tiff(path: Path, width: int, height: int, tile: int = 4096) -> Path:
    """Write a tiled RGB TIFF that declares ``width`` x ``height`` px but holds no tile data (offsets 0, 0 bytes).

    A few kB on disk whatever the size it claims; OpenSlide reads its absent tiles as transparent.
    """
    n = math.ceil(width / tile) * math.ceil(height / tile)
    short, long_ = 3, 4
    n_tags = 11
    start = 8 + 2 + 12 * n_tags + 4
    blobs = [struct.pack("<3H", 8, 8, 8), struct.pack(f"<{n}I", *[0] * n), struct.pack(f"<{n}I", *[0] * n)]
    offsets = [start, start + len(blobs[0]), start + len(blobs[0]) + len(blobs[1])]
    tags = [
        (256, long_, 1, width), (257, long_, 1, height), (258, short, 3, offsets[0]), (259, short, 1, 1),
        (262, short, 1, 2), (277, short, 1, 3), (284, short, 1, 1), (322, long_, 1, tile), (323, long_, 1, tile),
        (324, long_, n, offsets[1]), (325, long_, n, offsets[2]),
    ]
    out = bytearray(b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", n_tags))
    for tag, kind, count, value in tags:
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == short and count == 1 else struct.pack("<HHII", tag, kind, count, value)
    out += struct.pack("<I", 0) + b"".join(blobs)
    path.write_bytes(bytes(out))
    return path


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw: bytes | None) -> bytes:
    """Return a PNG file: its IHDR says ``width`` x ``height``; ``raw`` is the filtered scanlines (None: no IDAT)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    if raw is not None:
        body += chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def png16_rgb(rgb16: np.ndarray) -> bytes:
    """Return a 16-bit RGB PNG of an H x W x 3 uint16 array."""
    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[r].astype(">u2").tobytes() for r in range(h))
    return png_bytes(w, h, 16, 2, rows)


# =========================================================================== fixtures


@pytest.fixture()
def cohort_folder(tmp_path) -> Path:
    """A data folder for ``evaluate``: cohort.csv (s1 tumor, s2 normal), preds.csv, an empty annotations/."""
    folder = tmp_path / "data"
    (folder / "annotations").mkdir(parents=True)
    (folder / "cohort.csv").write_text("slide,label\ns1,tumor\ns2,normal\n")
    rows = ["slide,x,y,width,height,prob"]
    for slide, prob in (("s1", 0.9), ("s2", 0.1)):
        for i in range(4):
            rows.append(f"{slide},{i * 128},0,128,128,{prob}")
    (folder / "preds.csv").write_text("\n".join(rows) + "\n")
    return folder


def evaluate_args(folder: Path, predictions: Path | None = None, cohort: Path | None = None) -> list:
    return [
        "evaluate", "--predictions", predictions or folder / "preds.csv", "--annotations", folder / "annotations",
        "--cohort", cohort or folder / "cohort.csv",
    ]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny model's checkpoint (64 px at level 0) written by save_checkpoint."""
    import torch

    from core.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model("tiny"), {"patch_size": 64, "level": 0, "mpp": None})
    return path


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory) -> Path:
    """A 512 x 384 px pyramidal TIFF with tissue (for explain SLIDE --x --y)."""
    image = tissue_image(512, 384, (128, 64, 384, 320))
    return write_pyramid(tmp_path_factory.mktemp("slide") / "small.tiff", image, levels=2)


# =========================================================================== annotations

_FC = '{"type": "FeatureCollection", "features": [%s]}'


def _polygon(coords: str) -> str:
    return '{"type": "Feature", "properties": {"classification": {"name": "Tumor"}}, "geometry": {"type": "Polygon", "coordinates": [%s]}}' % coords


_BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
    + "]>\n<ASAP_Annotations>&lol9;</ASAP_Annotations>\n"
)

_ASAP = (
    '<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="_0">'
    "<Coordinates>%s</Coordinates></Annotation></Annotations></ASAP_Annotations>"
)


def _asap(*points: tuple[str, str]) -> str:
    return _ASAP % "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}"/>' for k, (x, y) in enumerate(points))


# name -> (file name, content, words the message must hold)
ANNOTATION_CASES = {
    "json nested 100000 deep": ("s1.geojson", _FC % ("[" * 100_000 + "]" * 100_000), ["s1.geojson", "nested"]),
    "coordinate of 401 digits": (
        "s1.geojson", _FC % _polygon("[[0, 0], [%s, 0], [10, 10], [0, 0]]" % ("9" * 401)), ["s1.geojson", "coordinate", "too large"],
    ),
    "coordinate of 5000 digits": (
        "s1.geojson", _FC % _polygon("[[0, 0], [%s, 0], [10, 10], [0, 0]]" % ("9" * 5000)), ["s1.geojson", "digits"],
    ),
    "coordinate 1e400": ("s1.geojson", _FC % _polygon("[[0, 0], [1e400, 0], [10, 10], [0, 0]]"), ["s1.geojson", "not finite"]),
    "NaN coordinate": ("s1.geojson", _FC % _polygon("[[0, 0], [NaN, 0], [10, 10], [0, 0]]"), ["s1.geojson", "not finite"]),
    "Infinity coordinate": ("s1.geojson", _FC % _polygon("[[0, 0], [10, -Infinity], [10, 10], [0, 0]]"), ["s1.geojson", "not finite"]),
    "polygon with 2 points": ("s1.geojson", _FC % _polygon("[[0, 0], [10, 10], [0, 0]]"), ["s1.geojson", "fewer than 3"]),
    "xml of unknown encoding": (
        "s1.xml", '<?xml version="1.0" encoding="x-unknown"?>\n<ASAP_Annotations/>\n', ["s1.xml", "encoding", "x-unknown"],
    ),
    "xml bomb (billion laughs)": ("s1.xml", _BILLION_LAUGHS, ["s1.xml", "entit", "refused"]),
    "xml coordinate of 401 digits": ("s1.xml", _asap(("0", "0"), ("9" * 401, "0"), ("10", "10")), ["s1.xml", "not finite"]),
    "xml NaN coordinate": ("s1.xml", _asap(("0", "0"), ("nan", "0"), ("10", "10")), ["s1.xml", "not finite"]),
    "xml polygon with 2 points": ("s1.xml", _asap(("0", "0"), ("10", "10")), ["s1.xml", "fewer than 3"]),
    "truncated gzip": ("s1.geojson.gz", gzip.compress((_FC % _polygon("[[0, 0], [10, 0], [10, 10], [0, 0]]")).encode())[:30], ["s1.geojson.gz", "gzip", "truncated"]),
    "not gzip behind .gz": ("s1.geojson.gz", b"\x1f\x8b\x08garbage", ["s1.geojson.gz", "gzip"]),
}

# Odd but valid files: no tumors. name -> (file name, content)
VALID_ANNOTATION_CASES = {
    "empty FeatureCollection": ("s1.geojson", _FC % ""),
    "empty FeatureCollection, gzip": ("s1.geojson.gz", gzip.compress((_FC % "").encode())),
    "empty FeatureCollection in UTF-16 (JSON allows it)": ("s1.geojson", (_FC % "").encode("utf-16")),
    "ASAP XML nested 100000 deep, no annotation": ("s1.xml", "<ASAP_Annotations>" + "<a>" * 100_000 + "</a>" * 100_000 + "</ASAP_Annotations>"),
}


@pytest.mark.parametrize("case", list(ANNOTATION_CASES))
def test_bad_annotation_file(case, cohort_folder, capsys):
    from core.annotations import load_tumors
    from core.errors import AnnotationError

    name, content, words = ANNOTATION_CASES[case]
    path = cohort_folder / "annotations" / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    before = snapshot(cohort_folder)
    started = time.perf_counter()
    with pytest.raises(AnnotationError) as info:
        load_tumors(path)
    message = str(info.value)
    assert "\n" not in message
    code, _, err = run_cli(capsys, *evaluate_args(cohort_folder))
    line = assert_clean_error(code, err, *words)
    assert line == f"error: {message}"
    assert snapshot(cohort_folder) == before
    assert time.perf_counter() - started < 20


@pytest.mark.parametrize("case", list(VALID_ANNOTATION_CASES))
def test_valid_annotation_file_without_tumors(case, cohort_folder, capsys):
    from core.annotations import load_tumors

    name, content = VALID_ANNOTATION_CASES[case]
    path = cohort_folder / "annotations" / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    assert load_tumors(path) == []
    before = snapshot(cohort_folder)
    code, out, err = run_cli(capsys, *evaluate_args(cohort_folder))
    assert code == 0, err
    assert "Traceback" not in err
    assert "0 tumors" in out and "slide level: AUC 1.0000" in out
    assert snapshot(cohort_folder) == before


# =========================================================================== checkpoints


def _payload(checkpoint: Path) -> dict:
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=True)


class _Code:
    """Pickles as a call of os.getcwd: harmless, but code all the same."""

    def __reduce__(self):
        return (os.getcwd, ())


def _no_patch_size(path: Path, checkpoint: Path) -> None:
    import torch

    raw = _payload(checkpoint)
    del raw["metadata"]["patch_size"]
    torch.save(raw, path)


def _zip_not_torch(path: Path, checkpoint: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")


def _torch_pickle_with_code(path: Path, checkpoint: Path) -> None:
    import torch

    raw = _payload(checkpoint)
    raw["metadata"]["hook"] = _Code()
    torch.save(raw, path)


def _raw_pickle_with_code(path: Path, checkpoint: Path) -> None:
    path.write_bytes(pickle.dumps({"format": "pathology-explorer/checkpoint", "x": _Code()}, protocol=2))


def _other_arch(path: Path, checkpoint: Path) -> None:
    import torch

    raw = _payload(checkpoint)
    raw["arch"] = "resnet50"
    torch.save(raw, path)


def _other_shapes(path: Path, checkpoint: Path) -> None:
    import torch

    from core.model import model_id_of

    raw = _payload(checkpoint)
    raw["state_dict"]["features.0.weight"] = torch.zeros(8, 3, 3, 3)
    raw["model_id"] = model_id_of(raw["state_dict"])
    torch.save(raw, path)


def _vgg_claimed(path: Path, checkpoint: Path) -> None:
    import torch

    raw = _payload(checkpoint)
    raw["arch"] = "vgg16"
    torch.save(raw, path)


def _bad_mpp(path: Path, checkpoint: Path) -> None:
    import torch

    raw = _payload(checkpoint)
    raw["metadata"]["mpp"] = "fast"
    torch.save(raw, path)


def _truncated(path: Path, checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# name -> (writer, words the message must hold)
CHECKPOINT_CASES = {
    "metadata without patch_size": (_no_patch_size, ["bad.pt", "patch_size"]),
    "metadata with a non-number mpp": (_bad_mpp, ["bad.pt", "mpp"]),
    "zip that is not a torch file": (_zip_not_torch, ["bad.pt", "zip archive but not a PyTorch file"]),
    "torch file with code": (_torch_pickle_with_code, ["bad.pt", "code", "refused"]),
    "raw pickle with code": (_raw_pickle_with_code, ["bad.pt", "code", "refused"]),
    "unknown architecture": (_other_arch, ["bad.pt", "unknown architecture", "resnet50"]),
    "weights of other shapes": (_other_shapes, ["bad.pt", "does not fit", "shape"]),
    "tiny weights claimed as vgg16": (_vgg_claimed, ["bad.pt", "does not fit the vgg16"]),
    "truncated file": (_truncated, ["bad.pt", "truncated"]),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoint(case, tmp_path, tiny_checkpoint, small_slide, capsys):
    writer, words = CHECKPOINT_CASES[case]
    bad = tmp_path / "bad.pt"
    writer(bad, tiny_checkpoint)
    patch = tmp_path / "patch.png"
    from PIL import Image

    Image.fromarray(tissue_image(64, 64, (16, 16, 48, 48))).save(patch)
    db = tmp_path / "results.sqlite"
    before = snapshot(bad, patch, small_slide)
    code, _, err = run_cli(capsys, "predict", "--model", bad, small_slide, "--db", db, "--device", "cpu")
    assert_clean_error(code, err, *words)
    assert not db.exists()
    for source in (["--image", patch], [small_slide, "--x", "0", "--y", "0"]):
        code, _, err = run_cli(capsys, "explain", "--model", bad, *source, "--method", "saliency", "--out", tmp_path / "map.npy", "--device", "cpu")
        assert_clean_error(code, err, *words)
    assert not (tmp_path / "map.npy").exists()
    assert snapshot(bad, patch, small_slide) == before


# =========================================================================== slides


def _zero_byte_svs(folder: Path) -> Path:
    path = folder / "empty.svs"
    path.write_bytes(b"")
    return path


def _text_tiff(folder: Path) -> Path:
    path = folder / "notes.tiff"
    path.write_text("this is not a slide\n")
    return path


def _truncated_tiff(folder: Path) -> Path:
    path = write_pyramid(folder / "cut.tiff", tissue_image(512, 384, (128, 64, 384, 320)), levels=2)
    data = path.read_bytes()
    path.write_bytes(data[:200])
    return path


def _giant_png_header(folder: Path) -> Path:
    path = folder / "giant.png"
    path.write_bytes(png_bytes(100_000, 100_000, 8, 2, None))
    return path


def _symlink_loop(folder: Path) -> Path:
    os.symlink(folder / "b.tiff", folder / "a.tiff")
    os.symlink(folder / "a.tiff", folder / "b.tiff")
    return folder / "a.tiff"


# name -> (maker, words of info's message)
SLIDE_CASES = {
    "zero-byte .svs": (_zero_byte_svs, ["empty.svs", "empty (0 bytes)"]),
    "text file named .tiff": (_text_tiff, ["notes.tiff", "neither a slide nor an image"]),
    "truncated tiff": (_truncated_tiff, ["cut.tiff", "damaged or truncated"]),
    "png header claiming 100000 x 100000 px": (_giant_png_header, ["giant.png", "too large"]),
    "symbolic link loop": (_symlink_loop, ["a.tiff", "symbolic link"]),
}


@pytest.mark.parametrize("case", list(SLIDE_CASES))
def test_bad_slide(case, tmp_path, tiny_checkpoint, capsys):
    maker, words = SLIDE_CASES[case]
    folder = tmp_path / "slides"
    folder.mkdir()
    path = maker(folder)
    before = snapshot(folder)
    code, _, err = run_cli(capsys, "info", path)
    assert_clean_error(code, err, *words)
    db = tmp_path / "results.sqlite"
    code, _, err = run_cli(capsys, "predict", "--model", tiny_checkpoint, path, "--db", db, "--device", "cpu", "--mpp", "1")
    assert_predict_refused(code, err, *words)
    assert snapshot(folder) == before


def test_giant_single_level_tiff(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    path = sparse_tiff(folder / "giant.tiff", 100_000, 100_000)
    assert path.stat().st_size < 64_000
    before = snapshot(folder)
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    info = json.loads(out)
    assert info["dimensions"] == [100_000, 100_000] and info["level_count"] == 1
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "predict", "--model", tiny_checkpoint, path, "--db", tmp_path / "r.sqlite", "--device", "cpu", "--mpp", "1")
    line = assert_predict_refused(code, err, "giant", "100000 x 100000", "pyramid")
    assert "memory" not in line.lower() or "MemoryError" not in line
    assert time.perf_counter() - started < 30
    assert snapshot(folder) == before


def test_large_single_level_tiff_gives_a_downsampled_tissue_mask(tmp_path):
    from core.slide_io import open_slide
    from core.tissue import tissue_mask

    from core.slide_io import THUMBNAIL_DIRECT_PIXELS

    path = sparse_tiff(tmp_path / "large.tiff", 8192, 8000)  # one level of 65.5 Mpx: read in 4 pieces
    assert 8192 * 8000 > THUMBNAIL_DIRECT_PIXELS
    slide = open_slide(path)
    started = time.perf_counter()
    mask = tissue_mask(slide, max_size=1024)
    assert time.perf_counter() - started < 30
    assert mask.mask.shape == (1000, 1024)
    assert not mask.mask.any()  # absent tiles are glass
    thumb = slide.thumbnail(256)
    assert thumb.shape == (250, 256, 3) and (thumb == 255).all()


def test_symlink_loop_inside_a_slides_folder(tmp_path, tiny_checkpoint, small_slide, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    _symlink_loop(folder)
    before = snapshot(folder)
    code, _, err = run_cli(capsys, "predict", "--model", tiny_checkpoint, folder, "--db", tmp_path / "r.sqlite", "--device", "cpu")
    assert_clean_error(code, err, "no slide")
    # Beside a real slide the loop is skipped: the slide is predicted.
    os.symlink(small_slide, folder / "real.tiff")
    code, _, err = run_cli(capsys, "predict", "--model", tiny_checkpoint, folder, "--db", tmp_path / "r.sqlite", "--device", "cpu")
    assert code == 0, err
    assert snapshot(folder) == {**before, folder / "real.tiff": ("link", str(small_slide))}


def test_folder_without_slides(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "readme.txt").write_text("no slides here\n")
    before = snapshot(folder)
    code, _, err = run_cli(capsys, "predict", "--model", tiny_checkpoint, folder, "--db", tmp_path / "r.sqlite", "--device", "cpu")
    assert_clean_error(code, err, "no slide")
    assert snapshot(folder) == before


# =========================================================================== explain --image


def _explain(capsys, tmp_path, image: Path, method: str = "saliency", *extra) -> tuple[int, str, str]:
    return run_cli(
        capsys, "explain", "--model", DEMO_MODEL, "--image", image, "--method", method, "--out", tmp_path / "map.npy", "--device", "cpu", *extra,
    )


@pytest.mark.parametrize("method", ["saliency", "gradcam", "smoothgrad", "ig", "occlusion", "lime"])
def test_explain_refuses_an_image_too_large_for_the_method(method, tmp_path, capsys):
    from PIL import Image

    from core.explain import METHODS

    path = tmp_path / "big.png"
    Image.new("RGB", (5000, 5000), (230, 150, 200)).save(path)
    before = snapshot(path)
    started = time.perf_counter()
    code, _, err = _explain(capsys, tmp_path, path, method)
    line = assert_clean_error(code, err, method, "5000 x 5000", "memory")
    limit = METHODS[method].max_pixels(METHODS[method].defaults)
    assert f"{limit:,}" in line
    assert time.perf_counter() - started < 20
    assert not (tmp_path / "map.npy").exists()
    assert snapshot(path) == before


def test_explain_size_limit_follows_the_batch_size():
    from core.explain import METHODS

    smoothgrad = METHODS["smoothgrad"]
    assert smoothgrad.max_pixels({**smoothgrad.defaults, "batch_size": 1}) > smoothgrad.max_pixels(smoothgrad.defaults)
    for method in METHODS.values():  # every method explains a 256 px patch with its defaults
        assert method.max_pixels(method.defaults) >= 256 * 256


def test_explain_reads_a_16_bit_png_scaled_to_8_bits(tmp_path, capsys):
    from PIL import Image

    from core.cli.explain import _read_patch
    from core.slide_io import read_image_rgb

    gray = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    rgb = read_image_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.round(gray / 257).astype(np.uint8))
    rgb16 = np.stack([gray, gray // 2, 65535 - gray], axis=-1)
    path16 = tmp_path / "rgb16.png"
    path16.write_bytes(png16_rgb(rgb16))
    got = read_image_rgb(path16)
    assert np.abs(got.astype(int) - np.round(rgb16 / 257).astype(int)).max() <= 1

    class Args:
        image, slide, x, y, level, size, mpp = path, None, None, None, None, None, None

    image, _ = _read_patch(Args, {})
    assert image.mean() < 200  # not turned white
    code, out, err = _explain(capsys, tmp_path, path)
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["map_shape"] == [64, 64]


def test_slide_of_a_16_bit_png_is_read_scaled(tmp_path):
    from PIL import Image

    from core.slide_io import open_slide

    gray = np.full((64, 96), 32768, dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    region = open_slide(path).read_region((0, 0), 0, (96, 64))
    assert region.shape == (64, 96, 3) and (region == 128).all()


def _tiny_png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 100, 150)).save(path)


def _not_an_image(path: Path) -> None:
    path.write_text("hello, I am a text file\n")


def _float_tiff(path: Path) -> None:
    import tifffile

    tifffile.imwrite(path, np.full((32, 32), 3.5, dtype=np.float32))


def _png_header_only(path: Path) -> None:
    path.write_bytes(png_bytes(100_000, 100_000, 8, 2, None))


def _png_header_10000(path: Path) -> None:  # above MAX_IMAGE_PIXELS (~89 Mpx), below PIL's own refusal at twice that
    path.write_bytes(png_bytes(10_000, 10_000, 8, 2, None))


def _image_link_loop(path: Path) -> None:
    os.symlink(path.with_name("other.png"), path)
    os.symlink(path, path.with_name("other.png"))


EXPLAIN_IMAGE_CASES = {
    "1 x 1 image": ("one.png", _tiny_png, ["too small", "1 x 1"]),
    "not an image": ("text.png", _not_an_image, ["text.png", "cannot read"]),
    "32-bit float image": ("float.tiff", _float_tiff, ["float.tiff", "float"]),
    "symbolic link loop": ("loop.png", _image_link_loop, ["loop.png", "symbolic link loop"]),
    "a folder": ("folder.png", lambda path: path.mkdir(), ["folder.png", "not a file"]),
    "png header claiming 100000 x 100000 px": ("huge.png", _png_header_only, ["huge.png", "10,000,000,000 px", "decompression bomb"]),
    "png header claiming 10000 x 10000 px": ("big.png", _png_header_10000, ["big.png", "10000 x 10000", "crop"]),
}


@pytest.mark.parametrize("case", list(EXPLAIN_IMAGE_CASES))
def test_explain_bad_image(case, tmp_path, capsys):
    name, maker, words = EXPLAIN_IMAGE_CASES[case]
    path = tmp_path / name
    maker(path)
    before = snapshot(path)
    code, _, err = _explain(capsys, tmp_path, path)
    assert_clean_error(code, err, *words)
    assert not (tmp_path / "map.npy").exists()
    assert snapshot(path) == before


# =========================================================================== predictions CSV and cohort


PREDICTION_CASES = {
    "10000-digit x": ("slide,x,y,width,height,prob\ns1,%s,0,128,128,0.5\n" % ("9" * 10_000), ["preds.csv", "x"]),
    "10000-digit prob": ("slide,x,y,width,height,prob\ns1,0,0,128,128,%s\n" % ("9" * 10_000), ["preds.csv", "prob"]),
    "10000-digit decimal prob": ("slide,x,y,width,height,prob\ns1,0,0,128,128,0.%s\n" % ("9" * 10_000), None),
    "NaN prob": ("slide,x,y,width,height,prob\ns1,0,0,128,128,nan\n", ["preds.csv", "prob"]),
    "NUL byte": ("slide,x,y,width,height,prob\ns1,0,0,128,128,0.5\x00\n", ["preds.csv"]),
    "utf-16": ("slide,x,y,width,height,prob\ns1,0,0,128,128,0.5\n".encode("utf-16"), ["preds.csv", "UTF-16"]),
}


@pytest.mark.parametrize("case", list(PREDICTION_CASES))
def test_bad_predictions_csv(case, cohort_folder, capsys):
    content, words = PREDICTION_CASES[case]
    path = cohort_folder / "preds.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    before = snapshot(cohort_folder)
    code, out, err = run_cli(capsys, *evaluate_args(cohort_folder))
    if words is None:  # 0.999... is a probability in [0, 1]: read as 1.0, then s2 has no predictions
        assert "Traceback" not in err
        assert code == 2 and "s2" in err
    else:
        assert_clean_error(code, err, *words)
    assert snapshot(cohort_folder) == before


COHORT_CASES = {
    "utf-16": ("slide,label\ns1,tumor\ns2,normal\n".encode("utf-16"), ["cohort.csv", "UTF-16", "UTF-8"]),
    "NUL byte": (b"slide,label\ns1,tu\x00mor\ns2,normal\n", ["cohort.csv", "line 2", "NUL byte"]),
    "UTF-16 without byte-order mark": ("slide,label\ns1,tumor\n".encode("utf-16-le"), ["cohort.csv", "NUL byte", "UTF-16"]),
    "10000-digit mpp": (f"slide,label,mpp\ns1,tumor,{'9' * 10_000}\ns2,normal,\n".encode(), ["cohort.csv", "mpp", "10,000 characters"]),
    "10000-character label": (f"slide,label\ns1,{'x' * 10_000}\ns2,normal\n".encode(), ["cohort.csv", "label", "10,000 characters"]),
    "binary garbage": (bytes(range(256)) * 4, ["cohort.csv"]),
}


@pytest.mark.parametrize("case", list(COHORT_CASES))
def test_bad_cohort_table(case, cohort_folder, capsys):
    from core.cohort import read_cohort
    from core.errors import CohortError

    content, words = COHORT_CASES[case]
    path = cohort_folder / "cohort.csv"
    path.write_bytes(content)
    before = snapshot(cohort_folder)
    with pytest.raises(CohortError):
        read_cohort(path)
    code, _, err = run_cli(capsys, *evaluate_args(cohort_folder))
    line = assert_clean_error(code, err, *words)
    assert len(line) < 400
    assert snapshot(cohort_folder) == before


# =========================================================================== a damaged results store


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())


def _sqlite_header_then_garbage(path: Path) -> None:
    rng = np.random.default_rng(1)
    path.write_bytes(b"SQLite format 3\x00" + rng.integers(0, 256, 8192 - 16, dtype=np.uint8).tobytes())


def _truncated_store(path: Path) -> None:
    from core.store import ResultStore

    with ResultStore(path) as store:
        store.register_model("m" * 16, arch="tiny", metadata={"patch_size": 64})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


STORE_CASES = {"random bytes": _random_bytes, "sqlite header then garbage": _sqlite_header_then_garbage, "truncated": _truncated_store}


@pytest.mark.parametrize("case", list(STORE_CASES))
def test_damaged_results_store(case, cohort_folder, tmp_path, capsys):
    db = cohort_folder / "results.sqlite"
    STORE_CASES[case](db)
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    before = snapshot(cohort_folder)
    commands = [
        ["evaluate", "--db", db, "--annotations", cohort_folder / "annotations", "--cohort", cohort_folder / "cohort.csv"],
        ["export", "--db", db, "--slide", "s1", "--format", "qupath", "--out", tmp_path / "s1.geojson"],
        ["report", "--db", db, "--cohort", cohort_folder / "cohort.csv", "--out", tmp_path / "report.html"],
    ]
    for argv in commands:
        code, _, err = run_cli(capsys, *argv)
        assert_clean_error(code, err, "results.sqlite", "not a", "left unchanged")
        assert snapshot(cohort_folder) == before, argv
        assert not any(Path(f"{db}{s}").exists() for s in ("-wal", "-shm", "-journal")), argv
    assert not (tmp_path / "s1.geojson").exists() and not (tmp_path / "report.html").exists()

