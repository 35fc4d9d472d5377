"""One file to the paper's 256×256 RGB image (§2), every mode converted, every bad file named."""

import numpy as np
import pytest
import torch
from helpers import smooth_image, write_image
from PIL import Image, JpegImagePlugin

import alexnet.data.images as images_module
from alexnet.data.images import load_image, load_image_torchvision, resized_size
from alexnet.errors import DataError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


@pytest.mark.parametrize("size, resized, box", [
    ((400, 300), (341, 256), (42, 0)),   # landscape: 256·400/300 = 341.3 -> 341, (341-256)//2 = 42
    ((300, 400), (256, 341), (0, 42)),   # portrait
    ((256, 256), (256, 256), (0, 0)),    # already the paper's size: untouched
    ((500, 500), (256, 256), (0, 0)),
    ((1000, 257), (996, 256), (370, 0)),  # 256·1000/257 = 996.1
])
def test_shorter_side_to_256_then_centre_crop(tmp_path, size, resized, box):
    path = write_image(tmp_path / "a.png", *size, seed=3, fmt="PNG")
    assert resized_size(*size) == resized
    # the direct computation: PIL's bilinear resize of the whole image, then plain slicing
    expected = np.asarray(Image.open(path).convert("RGB").resize(resized, Image.BILINEAR))
    left, top = box
    expected = expected[top:top + 256, left:left + 256].transpose(2, 0, 1)
    image = load_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 256, 256)
    assert np.array_equal(image.numpy(), expected)


@pytest.mark.parametrize("size", [(400, 300), (300, 400), (1000, 257)])
def test_warp_resizes_the_whole_image_to_256x256(tmp_path, size):
    path = write_image(tmp_path / "a.png", *size, seed=4, fmt="PNG")
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    # the direct computations: both sides to 256 (Caffe's), or the shorter side and the centre
    warped = np.asarray(rgb.resize((256, 256), Image.BILINEAR)).transpose(2, 0, 1)
    width, height = resized_size(*size)
    left, top = (width - 256) // 2, (height - 256) // 2
    paper = np.asarray(rgb.resize((width, height), Image.BILINEAR))[top:top + 256, left:left + 256].transpose(2, 0, 1)
    assert resized_size(*size, resize="warp") == (256, 256)
    assert np.array_equal(load_image(path, resize="warp").numpy(), warped)
    assert np.array_equal(load_image(path, resize="shorter-side").numpy(), paper)
    assert np.array_equal(load_image(path).numpy(), paper)  # the default is the paper's
    assert np.abs(warped.astype(int) - paper.astype(int)).mean() > 5  # the two differ on this image
    jpeg = write_image(tmp_path / "a.jpg", *size, seed=4)  # torchvision's decoder warps too
    with Image.open(jpeg) as image:
        warped_jpeg = np.asarray(image.convert("RGB").resize((256, 256), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.abs(load_image_torchvision(jpeg, resize="warp").numpy().astype(float) - warped_jpeg).mean() < 1.5
    with pytest.raises(DataError, match="resize must be one of shorter-side, warp; got 'stretch'"):
        load_image(path, resize="stretch")


def test_an_image_already_256_is_read_unchanged(tmp_path):
    pixels = smooth_image(256, 256, seed=1)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png").numpy(), pixels.transpose(2, 0, 1))


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "LA", "RGBA", "I;16"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    rgb = smooth_image(300, 280, seed=2)
    if mode == "I;16":
        image = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    else:
        image = Image.fromarray(rgb).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    path = tmp_path / f"a.{fmt.lower()}"
    image.save(path, fmt)
    out = load_image(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 256, 256)
    if mode in ("L", "LA", "I;16"):
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    if mode == "I;16":  # 16-bit grey keeps its top 8 bits: value·257 >> 8 = value
        expected = Image.fromarray(rgb[..., 0]).resize((300 * 256 // 280, 256), Image.BILINEAR)
        left = (300 * 256 // 280 - 256) // 2
        assert np.array_equal(out[0].numpy(), np.asarray(expected)[:, left:left + 256])


def test_transparency_shows_white(tmp_path):
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red under a fully transparent left half
    rgba[:, 128:, 3] = 255  # opaque right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert (out[:, :, :128] == 255).all()
    assert (out[:, :, 128:] == torch.tensor([200, 0, 0], dtype=torch.uint8).view(3, 1, 1)).all()


def test_torchvision_decoder_agrees_with_pil(tmp_path):
    path = write_image(tmp_path / "a.jpg", 410, 290, seed=5)
    pil, tv = load_image(path).float(), load_image_torchvision(path).float()
    assert tv.shape == (3, 256, 256)
    assert (pil - tv).abs().mean() < 1.5


def _truncated(path):
    write_image(path, 400, 300, seed=1)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _corrupt(path):
    write_image(path, 400, 300, seed=1)
    data = bytearray(path.read_bytes())
    data[200:] = bytes(len(data) - 200)  # header intact, scan data zeroed out... and no end marker
    path.write_bytes(bytes(data[:len(data) // 2]))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes), not an image"),
    (lambda p: p.write_text("just some notes, not a picture\n"), "not an image file"),
    (_truncated, "truncated or corrupt JPEG image"),
    (_corrupt, "truncated or corrupt JPEG image"),
])
@pytest.mark.parametrize("load", [load_image, load_image_torchvision])
def test_bad_files_give_one_line_naming_them(tmp_path, make, message, load):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(DataError) as error:
        load(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text


def _pil_resized(path, resized, box, mode="RGB"):
    """The direct computation, limits aside: PIL decodes all of the file, resizes, slices."""
    with Image.open(path) as image:
        expected = np.asarray(image.convert(mode).resize(resized, Image.BILINEAR))
    left, top = box
    return expected[top:top + 256, left:left + 256].astype(np.float32)


def test_an_image_just_over_pils_limit_is_read_not_called_corrupt(tmp_path, monkeypatch):
    # 14000x12800 = 179.2 M pixels, just over the 178.96 M at which PIL refuses an image as a
    # decompression bomb. Grey, with a gradient (2 MB as a JPEG): cheap to make and to check.
    width, height = 14000, 12800
    assert width * height > 2 * Image.MAX_IMAGE_PIXELS
    rows, columns = np.linspace(0, 60, height).astype(np.uint8), np.linspace(0, 190, width).astype(np.uint8)
    Image.fromarray(np.add.outer(rows, columns)).save(tmp_path / "big.jpg", quality=90)
    limit = Image.MAX_IMAGE_PIXELS
    image = load_image(tmp_path / "big.jpg")
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's guard is back for everyone else
    assert image.shape == (3, 256, 256) and torch.equal(load_image_torchvision(tmp_path / "big.jpg"), image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # for the full decode below
    expected = _pil_resized(tmp_path / "big.jpg", (280, 256), (12, 0), mode="L")  # 256·14000/12800 = 280
    difference = np.abs(image.numpy().astype(np.float32) - expected)  # grey: the same in R, G and B
    assert difference.mean() < 0.5 and difference.max() <= 3  # decoded at 1/8 scale, then resized


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.jpg", 2048, 1536, seed=6)
    scales, draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(image, mode, size):
        result = draft(image, mode, size)
        scales.append(image.decoderconfig[0])
        return result
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    load_image(path)
    assert scales == []  # 3.1 M pixels: decoded in full, as always
    monkeypatch.setattr(images_module, "DRAFT_PIXELS", 2048 * 1536 - 1)  # as if it were huge
    image = load_image(path)
    assert scales == [4]  # 2048x1536 -> 512x384, the smallest still over 341x256
    expected = _pil_resized(path, (341, 256), (42, 0)).transpose(2, 0, 1)
    assert np.abs(image.numpy().astype(np.float32) - expected).mean() < 1.5


@pytest.mark.parametrize("load", [load_image, load_image_torchvision])
def test_an_image_over_our_limit_says_it_is_too_large(tmp_path, monkeypatch, load):
    path = write_image(tmp_path / "a.jpg", 300, 260, seed=1)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 300 * 260 - 1)
    with pytest.raises(DataError) as error:
        load(path)
    assert str(error.value) == (f"{path}: too large to read (300x260 = 78,000 pixels; the limit is 77,999); "
                                f"shrink it or remove it (--skip-bad skips it)")
