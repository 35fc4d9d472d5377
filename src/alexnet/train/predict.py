"""Top-k predictions for image files, with the class names a checkpoint carries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from ..data.images import load_image
from ..devices import AUTO
from .checkpoint import checkpoint_placement, model_from_checkpoint, preprocess_from_checkpoint, read_checkpoint
from .evaluate import average_softmax

_WNID = re.compile(r"^n\d{8}$")


def readable_names(classes: Sequence[str]) -> List[str]:
    """Human-readable names for ImageNet's 1000 classes (folder names n01440764...), in the
    standard sorted-synset order that torchvision's category list follows; other class names
    are returned as they are."""
    if len(classes) == 1000 and all(_WNID.match(c) for c in classes) and list(classes) == sorted(classes):
        try:
            from torchvision.models import AlexNet_Weights

            return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
        except Exception:  # an older torchvision without the metadata: keep the synset ids
            return list(classes)
    return list(classes)


@torch.no_grad()
def predict_files(checkpoint: str, images: Sequence[str], *, top: int = 5, ten_crop: bool = False,
                  devices=AUTO) -> List[Dict]:
    """The ``top`` classes with probabilities for each image file, from a checkpoint file or
    a run folder, on ``devices`` (a DeviceRequest, a --devices string or a device list); each
    file read and cropped as the checkpoint's preprocessing says."""
    payload = read_checkpoint(checkpoint)
    placement = checkpoint_placement(payload, devices)
    model = model_from_checkpoint(payload, placement.layout, placement.devices)
    device = model.devices[0]
    preprocess = preprocess_from_checkpoint(payload, device)
    names = readable_names(model.classes)
    results = []
    for path in images:
        pixels = load_image(path, resize=preprocess.config.resize).unsqueeze(0).to(device)  # (1, 3, 256, 256) uint8
        crops = preprocess.ten(pixels) if ten_crop else preprocess.centre(pixels).unsqueeze(1)
        probs = average_softmax(model, crops)[0]
        values, indices = probs.topk(min(top, probs.numel()))
        results.append({"image": str(Path(path)), "predictions": [
            {"class": model.classes[i], "name": names[i], "probability": float(p)}
            for p, i in zip(values.tolist(), indices.tolist())]})
    return results


def format_predictions(results: List[Dict]) -> str:
    lines = []
    for r in results:
        lines.append(r["image"])
        for p in r["predictions"]:
            label = p["name"] if p["name"] == p["class"] else f"{p['name']} ({p['class']})"
            lines.append(f"  {100 * p['probability']:6.2f}%  {label}")
    return "\n".join(lines)
