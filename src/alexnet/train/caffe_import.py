"""Caffe's trained AlexNet as one of this package's checkpoints (``alexnet import-caffe``).

    import_caffemodel("bvlc_alexnet.caffemodel", "bvlc_alexnet.pt")

reads the file (``alexnet.caffe``: both of Caffe's layer formats, conv1 flipped from BGR to
RGB), builds Caffe's net as a variant of the layer table (``blocks="caffe"``, or "caffenet"
when the file pools before it normalizes: LRN with k = 1 across the towers, pooling that rounds
up, inverted dropout), and writes a weights-only checkpoint with Caffe's ImageNet mean as its
statistics and, for 1000 classes, the ILSVRC class names. Anything that is not that network is
one line naming the layer; nothing is written then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torchvision.models import AlexNet_Weights

from ..caffe import read_caffemodel, to_canonical
from ..data.preprocess import PreprocessConfig
from ..data.stats import DatasetStats
from ..errors import CaffeModelError
from ..model.build import build_model
from ..model.config import ModelConfig
from ..model.spec import CAFFE_LRN_K, LRN_ALPHA, LRN_BETA, LRN_SIZE, POOL_OVERLAP
from .checkpoint import save_checkpoint, stats_for_checkpoint

#: Caffe's ImageNet mean per channel (its ilsvrc_2012_mean, averaged), in Caffe's B, G, R order.
CAFFE_MEAN_BGR = (104.0, 116.7, 122.7)
#: What the file's LRN and pooling layers must say to be the net this package builds.
CAFFE_LRN = {"local_size": LRN_SIZE, "alpha": LRN_ALPHA, "beta": LRN_BETA, "k": CAFFE_LRN_K}
BLOCKS_OF_LAYOUT = {"alexnet": "caffe", "caffenet": "caffenet"}


def import_caffemodel(source: Union[str, Path], out: Union[str, Path], classes: Optional[Sequence[str]] = None) -> Dict:
    """Read ``source`` and write it to ``out`` as a weights-only checkpoint; returns what was
    imported (the file's format, the net's blocks, the class count, the layers skipped)."""
    source, out = Path(source), Path(out)
    state, info = to_canonical(read_caffemodel(source), source)  # the file's arrays are freed here
    config = ModelConfig(blocks=_blocks(info, source), num_classes=info["num_classes"], dropout_style="inverted",
                         init="caffe")
    # Built without storage and given the state's own tensors: one copy of the weights in memory.
    model = build_model(config, devices=["meta"], initialize=False)
    model.load_state_dict(state, assign=True)
    names = list(classes) if classes is not None else default_classes(config.num_classes)
    if len(names) != config.num_classes:
        raise CaffeModelError(f"{source}: fc8 has {config.num_classes} classes; {len(names)} names were given")
    save_checkpoint(out, model=model, classes=names, preprocess=PreprocessConfig(mean="channel", pca="none"),
                    stats=stats_for_checkpoint(caffe_mean()))
    return {"source": str(source), "out": str(out), "format": info["format"], "blocks": config.blocks,
            "num_classes": config.num_classes, "skipped": [name for name, _ in info["skipped"]]}


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


def default_classes(num_classes: int) -> List[str]:
    """The 1000 ILSVRC-2012 class names in Caffe's synset order (torchvision's list, the same
    sorted-wnid order); otherwise class_0, class_1, ..."""
    if num_classes == 1000:  # only the names: nothing is downloaded
        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return [f"class_{i}" for i in range(num_classes)]
