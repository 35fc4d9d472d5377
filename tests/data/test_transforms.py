"""The paper's crops, flips, mean and colour noise (§4.1), each against a direct computation."""

import numpy as np
import pytest
import torch

from alexnet.data.preprocess import Preprocess, PreprocessConfig
from alexnet.data.stats import DatasetStats
from alexnet.data.transforms import TEN_CROP_NAMES, centre_crops, crop_windows, pca_lighting, train_crops, ten_crops
from alexnet.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def make_stats(seed=0):
    """Statistics with a known, non-diagonal covariance and a non-constant mean image."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    covariance = basis @ np.diag([3000.0, 400.0, 90.0]) @ basis.T
    mean_image = rng.uniform(60, 190, size=(3, 256, 256))
    return DatasetStats.from_arrays(mean_image, mean_image.mean(axis=(1, 2)), covariance, count=10)


def random_images(batch, seed=0):
    return torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_crop_windows_equal_explicit_slicing_and_flips():
    images = random_images(6)
    top, left = torch.tensor([0, 32, 5, 17, 32, 0]), torch.tensor([0, 32, 31, 2, 0, 32])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_windows(images, top, left, flip, 224)
    for b in range(6):
        window = images[b, :, top[b]:top[b] + 224, left[b]:left[b] + 224]
        expected = window.flip(-1) if flip[b] else window
        assert torch.equal(out[b], expected)


def _draws(batch, seed, device="cpu"):
    """The random numbers train_crops documents, in its order: rows, columns, flips, α."""
    generator = torch.Generator(device).manual_seed(seed)
    top = torch.randint(0, 33, (batch,), generator=generator)
    left = torch.randint(0, 33, (batch,), generator=generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    alpha = torch.randn(batch, 3, generator=generator) * 0.1
    return top, left, flip, alpha


@pytest.mark.parametrize("mean", ["image", "centre", "channel"])
@pytest.mark.parametrize("pca", ["sqrt-lambda", "lambda", "none"])
def test_train_crops_equal_the_direct_computation(mean, pca):
    images, stats = random_images(8, seed=1), make_stats()
    out = train_crops(images, stats, torch.Generator().manual_seed(7), mean=mean, pca=pca)
    assert out.dtype == torch.float32 and out.shape == (8, 3, 224, 224)
    top, left, flip, alpha = _draws(8, 7)
    values, vectors = stats.eigenvalues.double(), stats.eigenvectors.double()
    scale = {"sqrt-lambda": values.sqrt(), "lambda": values / 255, "none": torch.zeros(3, dtype=torch.float64)}[pca]
    for b in range(8):
        t, l = int(top[b]), int(left[b])
        x = images[b, :, t:t + 224, l:l + 224].double()
        if mean == "image":  # the mean image under the same window (and flip, below)
            x = x - stats.mean_image.double()[:, t:t + 224, l:l + 224]
        elif mean == "channel":
            x = x - stats.channel_mean.double().view(3, 1, 1)
        if flip[b]:
            x = x.flip(-1)
        if mean == "centre":  # cuda-convnet: the mean's centre window, after cropping and flipping
            x = x - stats.mean_image.double()[:, 16:240, 16:240]
        offset = sum(alpha[b, i].double() * scale[i] * vectors[:, i] for i in range(3))  # Σ α_i s_i p_i
        expected = x + offset.view(3, 1, 1)
        assert torch.allclose(out[b].double(), expected, atol=1e-3), b


def test_train_crops_cover_all_33x33_positions_and_flip_half_the_time():
    top, left, flip, _ = _draws(20000, 3)
    assert (top.min(), top.max(), left.min(), left.max()) == (0, 32, 0, 32)
    assert len(set(zip(top.tolist(), left.tolist()))) == 33 * 33
    assert abs(flip.float().mean() - 0.5) < 0.02
    # and train_crops really uses them: a ramp image reveals the column window and the flip
    images = torch.arange(256, dtype=torch.uint8).expand(64, 3, 256, 256).contiguous()
    out = train_crops(images, make_stats(), torch.Generator().manual_seed(3), mean="none", pca="none")
    top, left, flip, _ = _draws(64, 3)
    first = torch.where(flip, left + 223, left).float()
    assert torch.equal(out[:, 0, 0, 0], first)


def test_flip_false_never_mirrors():
    images = torch.arange(256, dtype=torch.uint8).expand(256, 3, 256, 256).contiguous()
    out = train_crops(images, make_stats(), torch.Generator().manual_seed(0), mean="none", pca="none", flip=False)
    assert (out[:, :, :, 1] - out[:, :, :, 0] == 1).all()


@pytest.mark.parametrize("pca", ["sqrt-lambda", "lambda"])
def test_pca_lighting_statistics_over_many_draws(pca):
    """The offset Σ α_i s_i p_i with α ~ N(0, 0.1): mean 0 and covariance V diag(0.01 s²) Vᵀ.
    With s = √λ that is 0.01 times the data's own RGB covariance."""
    stats = make_stats(seed=4)
    n = 200_000
    offsets = pca_lighting(n, stats, pca, 0.1, torch.Generator().manual_seed(1)).view(n, 3).double().numpy()
    values = stats.eigenvalues.double().numpy()
    scale = np.sqrt(values) if pca == "sqrt-lambda" else values / 255
    vectors = stats.eigenvectors.double().numpy()
    expected = vectors @ np.diag((0.1 * scale) ** 2) @ vectors.T
    if pca == "sqrt-lambda":
        assert np.allclose(expected, 0.01 * stats.covariance.double().numpy(), rtol=1e-4, atol=1e-3)
    spread = np.sqrt(np.diag(expected)).max()
    assert np.abs(offsets.mean(axis=0)).max() < 5 * spread / np.sqrt(n)
    assert np.allclose(np.cov(offsets.T, bias=True), expected, rtol=0.02, atol=0.02 * spread ** 2)


def test_pca_lighting_is_one_offset_per_image_the_same_at_every_pixel():
    images = torch.zeros(16, 3, 256, 256, dtype=torch.uint8)
    out = train_crops(images, make_stats(), torch.Generator().manual_seed(2), mean="none")
    per_image = out[:, :, :1, :1]
    assert torch.equal(out, per_image.expand_as(out))
    assert per_image.flatten(1).std(dim=0).min() > 0  # images differ from each other


def test_the_default_colour_noise_is_the_square_root_convention():
    images, stats = random_images(4), make_stats()
    default = train_crops(images, stats, torch.Generator().manual_seed(5))
    explicit = train_crops(images, stats, torch.Generator().manual_seed(5), pca="sqrt-lambda")
    assert torch.equal(default, explicit)
    with pytest.raises(DataError, match="pca must be one of sqrt-lambda, lambda, none"):
        train_crops(images, stats, pca="sqrt")


def test_train_crops_are_reproducible_from_the_generator():
    images, stats = random_images(4), make_stats()
    a = train_crops(images, stats, torch.Generator().manual_seed(9))
    b = train_crops(images, stats, torch.Generator().manual_seed(9))
    c = train_crops(images, stats, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ten_crops_are_the_exact_windows_in_the_documented_order():
    images, stats = random_images(3, seed=2), make_stats()
    out = ten_crops(images, stats)
    assert out.shape == (3, 10, 3, 224, 224) and out.dtype == torch.float32
    centered = images.double() - stats.mean_image.double()
    windows = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]  # top-left, top-right, bottom-left, bottom-right, centre
    for k, (t, l) in enumerate(windows):
        plain = centered[:, :, t:t + 224, l:l + 224]
        assert torch.allclose(out[:, k].double(), plain, atol=1e-4), TEN_CROP_NAMES[k]
        assert torch.allclose(out[:, 5 + k].double(), plain.flip(-1), atol=1e-4), TEN_CROP_NAMES[5 + k]


def test_centre_crops_with_either_mean():
    images, stats = random_images(3, seed=4), make_stats()
    window = images.double()[:, :, 16:240, 16:240]
    assert torch.allclose(centre_crops(images, stats).double(),
                          window - stats.mean_image.double()[:, 16:240, 16:240], atol=1e-4)
    assert torch.allclose(centre_crops(images, stats, mean="channel").double(),
                          window - stats.channel_mean.double().view(1, 3, 1, 1), atol=1e-4)
    # The centre crop's own window is the mean's centre window: both conventions agree there.
    assert torch.equal(centre_crops(images, stats, mean="centre"), centre_crops(images, stats))


def test_227_crops_for_caffe_style_inputs():
    images, stats = random_images(2, seed=5), make_stats()
    out = train_crops(images, stats, torch.Generator().manual_seed(0), crop=227, pca="none", mean="none")
    assert out.shape == (2, 3, 227, 227)
    assert ten_crops(images, stats, crop=227).shape == (2, 10, 3, 227, 227)
    assert torch.equal(centre_crops(images, stats, crop=227, mean="none"), images[:, :, 14:241, 14:241].float())


def test_the_preprocessing_s_227_crops_are_caffe_s_windows():
    images, stats = random_images(2, seed=6), make_stats()
    centred = images.double() - stats.mean_image.double()  # the mean image under each window
    caffe = Preprocess(stats, PreprocessConfig(mean="image", pca="none", crop=227))
    assert torch.allclose(caffe.centre(images).double(), centred[:, :, 14:241, 14:241], atol=1e-4)
    ten = caffe.ten(images)
    assert ten.shape == (2, 10, 3, 227, 227)
    for k, (t, l) in enumerate([(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]):  # corners, centre; mirrored
        window = centred[:, :, t:t + 227, l:l + 227]
        assert torch.allclose(ten[:, k].double(), window, atol=1e-4), TEN_CROP_NAMES[k]
        assert torch.allclose(ten[:, 5 + k].double(), window.flip(-1), atol=1e-4), TEN_CROP_NAMES[5 + k]
    generator = torch.Generator().manual_seed(0)
    assert caffe.augment(images, generator).shape == (2, 3, 227, 227)
    paper = Preprocess(stats, PreprocessConfig())  # the default: the paper's 224
    assert torch.allclose(paper.centre(images).double(), centred[:, :, 16:240, 16:240], atol=1e-4)
    assert paper.ten(images).shape == (2, 10, 3, 224, 224)
    with pytest.raises(ConfigError, match="crop must be 224 or 227; got 225"):
        PreprocessConfig(crop=225)


def test_wrong_inputs_are_named():
    stats = make_stats()
    with pytest.raises(DataError, match=r"expected a uint8 batch \(B, 3, 256, 256\); got torch.float32"):
        train_crops(torch.zeros(2, 3, 256, 256), stats)
    with pytest.raises(DataError, match="crop must be between 1 and the image size 256; got 300"):
        centre_crops(random_images(1), stats, crop=300)
    with pytest.raises(DataError, match="mean must be one of image, centre, channel, none"):
        centre_crops(random_images(1), stats, mean="pixel")
