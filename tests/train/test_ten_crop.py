"""§4.1's test protocol: the network's softmax outputs over ten patches are averaged, not its
logits, checked with a net whose logits really change from patch to patch.

(test_loop.py's ten-crop test uses a paper-initialized AlexNet, whose logits barely depend on
the input: there the mean of the probabilities and the softmax of the mean logits agree.)
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet.data import load_or_compute_stats, open_dataset
from alexnet.data.preprocess import Preprocess
from alexnet.inference import evaluate

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet

NUM_CLASSES = 10


class PatchSensitiveNet(nn.Module):
    """A stand-in classifier: a fixed random linear map of the crop's 7x7 grid of 32x32 block
    means, so its logits move by several units between corners, centre and mirror images."""

    devices = (torch.device("cpu"),)

    def __init__(self, seed=7, scale=0.006):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(NUM_CLASSES, 3 * 7 * 7, generator=g) * scale)

    def forward(self, x):
        return F.avg_pool2d(x, 32).flatten(1) @ self.weight.t()  # (N, 3, 224, 224) -> (N, 10)


def ten_patches(image, mean_image):
    """The paper's ten 224 patches of a 256 image, built directly: mean subtracted, the four
    corners and the centre, and their horizontal mirrors."""
    centred = image.float() - mean_image
    patches = []
    for top, left in ((0, 0), (0, 32), (32, 0), (32, 32), (16, 16)):
        patch = centred[:, top:top + 224, left:left + 224]
        patches += [patch, patch.flip(-1)]
    return torch.stack(patches)  # (10, 3, 224, 224)


def test_ten_crop_averages_probabilities_not_logits(tiny):
    """§4.1: "averaging the predictions made by the network's softmax layer on the ten patches"."""
    dataset = open_dataset(tiny, "val")
    stats = load_or_compute_stats(tiny, workers=0)
    model = PatchSensitiveNet().eval()
    result = evaluate(model, dataset, Preprocess(stats), batch_size=3, ten_crop=True, workers=0)

    nll = nll_of_mean_logits = 0.0
    misses1 = misses5 = 0
    spread, smallest = [], 1.0
    with torch.no_grad():
        for i in range(len(dataset)):
            image, label = dataset[i]
            logits = model(ten_patches(image, stats.mean_image))  # (10 patches, 10 classes)
            spread.append(logits.std(0).mean().item())
            probs = logits.softmax(1).mean(0)
            ranked = probs.argsort(descending=True).tolist()
            misses1 += ranked[0] != label
            misses5 += label not in ranked[:5]
            nll -= probs[label].log().item()
            smallest = min(smallest, probs[label].item())
            nll_of_mean_logits -= logits.mean(0).log_softmax(0)[label].item()
    n = len(dataset)
    # The net's logits really differ between the patches of an image (by units, on average), so
    # the two ways of averaging give clearly different losses: this test can tell them apart.
    assert sum(spread) / n > 1.0
    assert abs(nll - nll_of_mean_logits) / n > 0.05
    assert smallest > 1e-10  # and evaluate's floor of 1e-12 under a probability plays no part
    assert result["images"] == n == 10
    assert result["loss"] == pytest.approx(nll / n, rel=1e-4)
    assert result["top1_error"] == pytest.approx(misses1 / n)
    assert result["top5_error"] == pytest.approx(misses5 / n)
