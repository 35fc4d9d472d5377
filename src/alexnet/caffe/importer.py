"""Caffe's trained AlexNet as one of this package's checkpoints (``alexnet import-caffe``).

    import_caffemodel("bvlc_alexnet.caffemodel", "bvlc_alexnet.pt")
    open_caffemodel("bvlc_alexnet.caffemodel")     # the same checkpoint, in memory

reads the file (``alexnet.caffe``: both of Caffe's layer formats, conv1 flipped from BGR to
RGB), builds Caffe's net as a variant of the layer table (``blocks="caffe"``, or "caffenet"
when the file pools before it normalizes: LRN with k = 1 across the towers, pooling that rounds
up, inverted dropout), and writes a weights-only checkpoint with Caffe's ImageNet mean as its
statistics and, for 1000 classes, the ILSVRC class names. Anything that is not that network is
one line naming the layer; nothing is written then.

The checkpoint's preprocessing is Caffe's evaluation (``CAFFE_PREPROCESS``): the image warped to
256x256, 227 crops, no colour noise, and Caffe's mean: the per-channel means, or, given
``mean=`` a ``.binaryproto`` (``ilsvrc_2012_mean.binaryproto``), that 256x256 mean image,
flipped to RGB, subtracted under each crop's window (``mean="image"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..checkpoint import as_read, checkpoint_payload, stats_for_checkpoint
from ..data.images import IMAGE_SIZE, WARP
from ..data.imagenet import ILSVRC_NAMES
from ..data.preprocess import PreprocessConfig
from ..data.stats import DatasetStats
from ..errors import CaffeModelError
from ..files import check_output, save_torch
from ..run_folder import is_checkpoint_file
from ..model.build import build_model
from ..model.config import ModelConfig
from ..model.spec import CAFFE_LRN_K, LRN_ALPHA, LRN_BETA, LRN_SIZE, PADDED_CROP, POOL_OVERLAP
from .read import read_binaryproto, read_caffemodel, to_canonical

#: Caffe's ImageNet mean per channel (its ilsvrc_2012_mean, averaged), in Caffe's B, G, R order.
CAFFE_MEAN_BGR = (104.0, 116.7, 122.7)
#: What the file's LRN and pooling layers must say to be the net this package builds.
CAFFE_LRN = {"local_size": LRN_SIZE, "alpha": LRN_ALPHA, "beta": LRN_BETA, "k": CAFFE_LRN_K}
BLOCKS_OF_LAYOUT = {"alexnet": "caffe", "caffenet": "caffenet"}
#: How Caffe evaluated its nets (its train_val.prototxt's TEST phase, over images its
#: convert_imageset had warped to 256x256): the 227 centre window, no colour noise; the mean
#: is the channel means, or the mean image when one is given.
CAFFE_PREPROCESS = PreprocessConfig(mean="channel", pca="none", resize=WARP, crop=PADDED_CROP)


def import_caffemodel(source: Union[str, Path], out: Union[str, Path], classes: Optional[Sequence[str]] = None,
                      mean: Optional[Union[str, Path]] = None, overwrite: bool = False) -> Dict:
    """Read ``source`` and write it to ``out`` as a weights-only checkpoint with Caffe's
    preprocessing; ``mean``: a .binaryproto mean image to subtract instead of the channel
    means. ``out`` is new, or a checkpoint replaced with ``overwrite`` (never an input:
    ``files.check_output``). Returns what was imported (the file's format, the net's blocks,
    the class count, the mean, the layers skipped)."""
    check_output(out, "--out", inputs=[source] + ([mean] if mean is not None else []), overwrite=overwrite,
                 ours=is_checkpoint_file)
    payload, info = caffe_checkpoint(source, classes, mean)
    as_read(dict(payload), source)  # weights that are not finite, or names that do not fit: one line, nothing written
    save_torch(out, payload)
    return {**info, "out": str(out)}


def open_caffemodel(source: Union[str, Path], classes: Optional[Sequence[str]] = None,
                    mean: Optional[Union[str, Path]] = None) -> Dict:
    """``source`` as ``alexnet.checkpoint.read_checkpoint`` returns a checkpoint, without
    writing one: what ``alexnet.trained.open_trained`` opens for a .caffemodel."""
    payload, _ = caffe_checkpoint(source, classes, mean)
    return as_read(payload, source)


def caffe_checkpoint(source: Union[str, Path], classes: Optional[Sequence[str]] = None,
                     mean: Optional[Union[str, Path]] = None):
    """(the checkpoint's contents, what was imported) for ``source``."""
    source = Path(source)
    stats = caffe_mean() if mean is None else caffe_mean_image(mean)  # a bad mean file: before the big read
    state, info = to_canonical(read_caffemodel(source), source)  # the file's arrays are freed here
    config = ModelConfig(blocks=_blocks(info, source), num_classes=info["num_classes"], dropout_style="inverted",
                         init="caffe")
    # Built without storage and given the state's own tensors: one copy of the weights in memory.
    model = build_model(config, devices=["meta"], initialize=False)
    model.load_state_dict(state, assign=True)
    names = list(classes) if classes is not None else default_classes(config.num_classes)
    if len(names) != config.num_classes:
        raise CaffeModelError(f"{source}: fc8 has {config.num_classes} classes; {len(names)} names were given")
    preprocess = CAFFE_PREPROCESS.replace(mean="channel" if mean is None else "image")
    payload = checkpoint_payload(model=model, classes=names, preprocess=preprocess, stats=stats_for_checkpoint(stats))
    return payload, {"source": str(source), "format": info["format"], "blocks": config.blocks,
                     "num_classes": config.num_classes, "mean": "channel" if mean is None else str(mean),
                     "skipped": [name for name, _ in info["skipped"]]}


def _blocks(info: Dict, source: Path) -> str:
    """Caffe's bvlc_alexnet or CaffeNet, from where the file's LRN sits; one line when its LRN
    or pooling are not Caffe's AlexNet's."""
    if info["layout"] not in BLOCKS_OF_LAYOUT:
        raise CaffeModelError(f"{source}: no LRN layer; Caffe's AlexNet has two (norm1, norm2)")
    for lrn in info["lrn"]:
        got = {key: lrn.get(key) for key in CAFFE_LRN}
        # the file holds float32: 1e-4 reads back as 9.99999975e-05
        same = all(abs(float(got[key]) - value) <= 1e-6 * abs(value) for key, value in CAFFE_LRN.items())
        if not same or lrn.get("norm_region") != "ACROSS_CHANNELS":
            raise CaffeModelError(f"{source}: layer {lrn['name']!r} is an LRN with {got} ({lrn.get('norm_region')}); "
                                  f"Caffe's AlexNet's is {CAFFE_LRN} across channels")
    for pool in info["pooling"]:
        if (pool.get("kernel"), pool.get("stride"), pool.get("pool")) != (*POOL_OVERLAP, "MAX"):
            raise CaffeModelError(f"{source}: layer {pool['name']!r} is {pool.get('pool')} pooling "
                                  f"{pool.get('kernel')}/{pool.get('stride')}; Caffe's AlexNet max-pools 3x3/2")
    return BLOCKS_OF_LAYOUT[info["layout"]]


def caffe_mean() -> DatasetStats:
    """Caffe's ImageNet mean as the statistics of a checkpoint, in R, G, B order: the mean
    every channel of every input has subtracted (no colour noise: Caffe's nets had none)."""
    rgb = torch.tensor(CAFFE_MEAN_BGR[::-1])
    return DatasetStats.from_arrays(rgb.view(3, 1, 1).expand(3, 256, 256).numpy(), rgb.numpy(),
                                    torch.zeros(3, 3).numpy(), count=0)


def caffe_mean_image(path: Union[str, Path]) -> DatasetStats:
    """Caffe's mean image from a .binaryproto (1 x 3 x 256 x 256, B, G, R) as a checkpoint's
    statistics, in R, G, B order; a file of another shape, or with values that are not
    finite, is one line naming it."""
    blob = read_binaryproto(path)
    expected = (3, IMAGE_SIZE, IMAGE_SIZE)
    if blob.shape not in (expected, (1, *expected)):
        shape = "x".join(map(str, blob.shape))
        raise CaffeModelError(f"{path}: a blob of shape {shape}; Caffe's mean image is 1x3x{IMAGE_SIZE}x{IMAGE_SIZE} "
                              f"(B, G, R)")
    if not np.isfinite(blob).all():
        raise CaffeModelError(f"{path}: the mean image holds values that are not finite numbers")
    rgb = np.ascontiguousarray(blob.reshape(expected)[::-1], dtype=np.float32)
    return DatasetStats.from_arrays(rgb, rgb.mean(axis=(1, 2), dtype=np.float64), np.zeros((3, 3)), count=0)


def default_classes(num_classes: int) -> List[str]:
    """The 1000 ILSVRC-2012 class names in Caffe's synset order (torchvision's list, the same
    sorted-wnid order); otherwise class_0, class_1, ..."""
    if num_classes == len(ILSVRC_NAMES):
        return list(ILSVRC_NAMES)
    return [f"class_{i}" for i in range(num_classes)]
