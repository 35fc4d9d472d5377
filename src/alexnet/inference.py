"""Running a trained net: top-1 and top-5 error with the centre crop and the paper's ten-crop
protocol (§4.1: four corner and centre patches and their mirrors; the network's softmax
outputs averaged), the top classes of image files, and a layer's activations for a set of
images (features for transfer learning, as DeCAF used fc6 and fc7).

    evaluate_checkpoint("runs/x", runtime=Runtime(devices="cpu"))     # alexnet eval
    predict_files("runs/x", ["cat.jpg"], runtime=Runtime(amp="bf16"))  # alexnet predict
    write_features("runs/x", "photos/", "f.npz", layers=["fc7"])       # alexnet features

All three open the net with ``alexnet.trained.open_trained``; ``evaluate`` is the loop training's
validation runs too.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import saved_preprocess
from .data import make_loader, open_dataset, resolve_data_root
from .data.image_files import image_paths, open_images
from .data.images import load_image
from .data.preprocess import Preprocess
from .errors import ConfigError
from .files import check_new_file, check_output, write_atomically, write_json
from .precision import autocast_context
from .progress import SILENT, Reporter
from .run_folder import RunFolder, check_classes, trained_data
from .runtime import Runtime
from .trained import TrainedNet, open_trained, read_trained
from .world import SINGLE, World, all_sum

# FACTS §7: the paper's single-model results and two well-known ports, for comparison tables.
PAPER_RESULTS = [
    {"what": "paper, ILSVRC-2010 test, 1 CNN, 10 patches", "top1_error": 0.375, "top5_error": 0.170},
    {"what": "paper, ILSVRC-2010 test, 1 CNN, single patch", "top1_error": 0.390, "top5_error": 0.183},
    {"what": "paper, ILSVRC-2012 val, 1 CNN", "top1_error": 0.407, "top5_error": 0.182},
    {"what": "Caffe bvlc_alexnet, ILSVRC-2012 val, centre crop", "top1_error": 0.429, "top5_error": 0.198},
    {"what": "torchvision alexnet (single column), centre crop", "top1_error": 0.435, "top5_error": 0.209},
]


def average_softmax(model: nn.Module, crops: torch.Tensor, amp_dtype=None,
                    channels_last: bool = False) -> torch.Tensor:
    """(B, K, 3, H, W) crops -> (B, classes): the mean of the K crops' softmax probabilities
    (``TrainedNet.probabilities`` for a net being trained, which is no TrainedNet yet)."""
    b, k = crops.shape[:2]
    flat = crops.flatten(0, 1)
    if channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    with autocast_context(model.devices, amp_dtype):
        logits = model(flat)
    return F.softmax(logits.float(), dim=1).view(b, k, -1).mean(dim=1)


def topk_errors(probs: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-sample top-1 and top-5 misses (bool) for probabilities (B, C)."""
    k = min(5, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    hit5 = (top == labels[:, None]).any(dim=1)
    return {"top1": top[:, 0] != labels, "top5": ~hit5}


class EvaluationStopped(Exception):
    """``evaluate`` was asked to stop (``stop()`` became true) before its last batch."""


@torch.no_grad()
def evaluate(model: nn.Module, dataset, preprocess: Preprocess, *, batch_size: int = 128,
             ten_crop: bool = False, amp_dtype=None, workers: Optional[int] = None,
             reporter: Reporter = SILENT, desc: str = "eval", world: World = SINGLE,
             stop: Optional[Callable[[], bool]] = None) -> Dict:
    """Top-1/top-5 error and loss over ``dataset`` (the model is left in eval mode). With
    several replicas (``world``), rank r evaluates images r, r+W, r+2W... and the sums are
    reduced, so every image counts once and every rank returns the same figures. ``stop``,
    asked before each batch (on every rank alike), raises ``EvaluationStopped``."""
    model.eval()
    device = model.devices[0]
    mine = range(world.rank, len(dataset), world.size) if world.distributed else None
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers,
                         pin_memory=device.type == "cuda", indices=mine)
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # images, top-1 misses, top-5 misses, loss
    with reporter.bar(len(loader), desc) as bar:
        for images, labels in loader:
            if stop is not None and stop():
                raise EvaluationStopped(desc)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            crops = preprocess.ten(images) if ten_crop else preprocess.centre(images).unsqueeze(1)
            probs = average_softmax(model, crops, amp_dtype, preprocess.channels_last)
            misses = topk_errors(probs, labels)
            nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).sum()
            totals += torch.stack([torch.tensor(float(len(labels)), device=device, dtype=torch.float64),
                                   misses["top1"].sum().double(), misses["top5"].sum().double(), nll.double()])
            bar.update(1)
    n, top1, top5, loss = all_sum(totals, world).tolist()
    protocol = "ten-crop" if ten_crop else "centre crop"
    if n == 0:
        return {"images": 0, "top1_error": math.nan, "top5_error": math.nan, "loss": math.nan, "protocol": protocol}
    return {"images": int(n), "top1_error": top1 / n, "top5_error": top5 / n, "loss": loss / n, "protocol": protocol}


def format_results(results: Dict[str, Dict], include_paper: bool = True) -> str:
    """A table of our errors beside the paper's (FACTS §7)."""
    width = max([52, *(len(name) for name in results), *(len(r["what"]) + 2 for r in PAPER_RESULTS)])
    lines = [f"{'':<{width}} {'top-1 error':>12} {'top-5 error':>12}"]
    for name, r in results.items():
        lines.append(f"{name:<{width}} {100 * r['top1_error']:>11.2f}% {100 * r['top5_error']:>11.2f}%")
    if include_paper:
        lines.append("for comparison (ImageNet, 1000 classes):")
        for r in PAPER_RESULTS:
            lines.append(f"  {r['what']:<{width - 2}} {100 * r['top1_error']:>11.1f}% {100 * r['top5_error']:>11.1f}%")
    return "\n".join(lines)


#: What an evaluation's JSON says it is (``is_evaluation``).
EVAL_FORMAT = "alexnet-evaluation"


def evaluation_path(checkpoint: Union[str, Path], out=None, overwrite: bool = False) -> Path:
    """Where a checkpoint's evaluation is saved, checked before the evaluation runs
    (``files.check_output``): ``out`` (new, or an earlier evaluation replaced with
    ``overwrite``), else eval.json in its run folder, else CHECKPOINT.eval.json (each replaced
    by the next evaluation, as long as it is one)."""
    path = Path(checkpoint)
    if out is None:
        run = RunFolder.of_checkpoint(path)
        default = run.eval_path if run is not None else path.with_name(path.name + ".eval.json")
        return check_output(default, "the evaluation's file", overwrite=True, ours=is_evaluation)
    return check_output(out, "--json-out", inputs=[path], overwrite=overwrite, ours=is_evaluation)


def is_evaluation(path: Path) -> bool:
    """An evaluation this package saved (also one saved before it said so: its keys)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(saved, dict) and (saved.get("format") == EVAL_FORMAT or {"checkpoint", "results"} <= set(saved))


def evaluate_checkpoint(checkpoint, *, data=None, split: str = "val", batch_size: int = 64, ten_crop: bool = True,
                        runtime: Runtime = Runtime(), out=None, overwrite: bool = False, save: bool = True,
                        reporter: Reporter = SILENT) -> Dict:
    """Centre-crop (and ten-crop) errors of a trained net (``open_trained``'s sources: a
    checkpoint file, a run folder's last checkpoint, a Caffe file) on a dataset split, on
    ``runtime``, saved as JSON at ``saved_to`` (``save_evaluation``; ``save=False`` leaves that
    to the caller, who may show the figures first). The images are read and cropped as the
    net's preprocessing says (an imported Caffe net's: warped to 256x256, 227 crops)."""
    payload = read_trained(checkpoint)
    out = evaluation_path(payload["path"], out, overwrite)  # before the long work
    root = resolve_data_root(trained_data(payload["config"]) if data is None else data, reporter)
    dataset = open_split(payload, root, split)
    net = open_trained(payload, runtime)  # the data checked first: building the net takes seconds
    kwargs = dict(batch_size=batch_size, amp_dtype=net.amp_dtype, workers=runtime.workers, reporter=reporter)
    results = [evaluate(net.model, dataset, net.preprocess, desc="centre crop", **kwargs)]
    if ten_crop:
        results.append(evaluate(net.model, dataset, net.preprocess, ten_crop=True, desc="ten crops", **kwargs))
    summary = {"format": EVAL_FORMAT, "checkpoint": net.path, "dataset": str(root), "split": split, "classes": list(dataset.classes),
               "placement": net.placement.as_dict(), "progress": net.checkpoint.get("progress", {}),
               "results": results, "paper": PAPER_RESULTS, "saved_to": str(out)}
    if save:
        save_evaluation(summary)
    return summary


def open_split(checkpoint: Dict, root, split: str, hint: str = ""):
    """A split of the dataset at ``root``, its files read as the net of ``checkpoint`` (its
    contents, ``read_trained``'s, or a ``TrainedNet.checkpoint``) was trained to read them, with
    the classes it was trained on (one line where they differ). It needs no net: a command
    checks its data before it spends seconds building one."""
    dataset = open_dataset(root, split, resize=saved_preprocess(checkpoint).resize)
    check_classes(checkpoint["classes"], dataset, checkpoint["path"], f"{root} ({split})", hint=hint)
    return dataset


def save_evaluation(summary: Dict) -> Path:
    """``evaluate_checkpoint``'s figures at their ``saved_to`` (a ``StorageError`` line when the
    folder refuses them)."""
    return write_json(summary["saved_to"], {k: v for k, v in summary.items() if k != "saved_to"})


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
def predict_files(checkpoint, images: Sequence[str], *, top: int = 5, ten_crop: bool = False,
                  runtime: Runtime = Runtime()) -> List[Dict]:
    """The ``top`` classes with probabilities for each image file, from a trained net
    (``open_trained``'s sources) on ``runtime``; each file read and cropped as the net's
    preprocessing says."""
    net = open_trained(checkpoint, runtime)
    names = readable_names(net.classes)
    results = []
    for path in images:
        pixels = load_image(path, resize=net.preprocess.config.resize).unsqueeze(0).to(net.device)  # (1, 3, 256, 256)
        crops = net.preprocess.ten(pixels) if ten_crop else net.preprocess.centre(pixels).unsqueeze(1)
        probs = net.probabilities(crops)[0]
        values, indices = probs.topk(min(top, probs.numel()))
        results.append({"image": str(Path(path)), "predictions": [
            {"class": net.classes[i], "name": names[i], "probability": float(p)}
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


# -- features ---------------------------------------------------------------------------------------
#: The layers whose activations are features, and what each one's output is: fc6 and fc7 after
#: their ReLU and before the paper's dropout scale (at test the paper's net multiplies them by
#: 1-p before the next layer reads them; ``dropout_scale`` gives that factor).
FEATURE_LAYERS = {
    "pool5": "conv5's maps after the ReLU and max-pooling, flattened map by map as fc6 reads them (N, 9216)",
    "fc6": "fc6 after the ReLU, before the dropout's test-time x(1-p) (N, 4096)",
    "fc7": "fc7 after the ReLU, before the dropout's test-time x(1-p) (N, 4096): DeCAF's features",
    "fc8": "the logits, fc8's output before the softmax (N, classes)",
}
#: The layer with no ReLU after it.
LOGITS = "fc8"


def check_layers(layers: Sequence[str]) -> List[str]:
    """The layers asked for, each once, in the order given; one line where one is not a layer
    ``FEATURE_LAYERS`` names."""
    layers = list(dict.fromkeys(layers))
    unknown = [layer for layer in layers if layer not in FEATURE_LAYERS]
    if unknown or not layers:
        given = f" {unknown[0]}" if unknown else ""
        raise ConfigError(f"--layer{given}: give one or more of {', '.join(FEATURE_LAYERS)}")
    return layers


def feature_width(net: TrainedNet, layer: str) -> int:
    """How many values ``layer`` gives per image (pool5 is conv5's block's output)."""
    return math.prod(net.model.spec["conv5" if layer == "pool5" else layer].out_shape)


def dropout_scale(net: TrainedNet) -> float:
    """What fc7 (and fc6) are multiplied by before the next layer reads them at test: 1-p for the
    paper's dropout (``model.dropout.PaperDropout``), 1 for the inverted one."""
    config = net.model.spec.config
    return 1.0 - config.dropout if config.dropout_style == "paper" else 1.0


def activations(net: TrainedNet, crops: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    """(N, 3, crop, crop) preprocessed crops -> each of ``layers``' features (``FEATURE_LAYERS``),
    (N, D) float32 on the net's first device, run as ``net.logits`` runs (precision, format)."""
    outputs = net.layer_outputs(crops, layers)
    return {layer: (out if layer == LOGITS else F.relu(out)).flatten(1) for layer, out in outputs.items()}


@torch.no_grad()
def dataset_features(net: TrainedNet, dataset, layers: Sequence[str] = ("fc7",), *, ten_crop: bool = False,
                     batch_size: int = 64, indices: Optional[Sequence[int]] = None,
                     dtype: torch.dtype = torch.float32, reporter: Reporter = SILENT,
                     desc: str = "features") -> Dict[str, torch.Tensor]:
    """``layers``' features of every image of ``dataset`` (or those at ``indices``, in that
    order), read and cropped as the net's preprocessing says: the centre crop, or
    (``ten_crop``) the mean over the paper's ten patches. Returns {layer: (N, D) ``dtype`` on
    the CPU, ..., "labels": (N,) int64}, in batches on the runtime's devices."""
    layers = check_layers(layers)
    net.model.eval()
    loader = make_loader(dataset, batch_size, shuffle=False, indices=indices, workers=net.runtime.workers,
                         pin_memory=net.device.type == "cuda")
    n = len(dataset) if indices is None else len(indices)
    out = {layer: torch.empty((n, feature_width(net, layer)), dtype=dtype) for layer in layers}
    labels = torch.empty(n, dtype=torch.int64)
    done = 0
    with reporter.bar(len(loader), desc) as bar:
        for images, batch_labels in loader:
            images = images.to(net.device, non_blocking=True)
            crops = net.preprocess.ten(images) if ten_crop else net.preprocess.centre(images).unsqueeze(1)
            b, k = crops.shape[:2]  # (B, K, 3, crop, crop): K = 10 or 1
            for layer, value in activations(net, crops.flatten(0, 1), layers).items():
                out[layer][done:done + b] = value.view(b, k, -1).mean(dim=1).cpu().to(dtype)
            labels[done:done + b] = batch_labels
            done += b
            bar.update(1)
    return {**{layer: value[:done] for layer, value in out.items()}, "labels": labels[:done]}


#: What a features file says it is (``is_features_file``).
FEATURES_FORMAT = "alexnet-features"


def is_features_file(path: Path) -> bool:
    """A .npz this package wrote with ``write_features`` (its arrays' names, read without
    loading them)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {"format.npy", "net_classes.npy"} & set(archive.namelist()) != set()
    except (OSError, zipfile.BadZipFile):
        return False


def write_features(checkpoint, data, out, *, layers: Sequence[str] = ("fc7",), ten_crop: bool = False,
                   split: str = "val", batch_size: int = 64, runtime: Runtime = Runtime(), overwrite: bool = False,
                   reporter: Reporter = SILENT) -> Dict:
    """``layers``' features (``dataset_features``) of the images at ``data`` (a folder of images,
    a folder of class folders, or a dataset's ``split``: ``data.image_files.open_images``) as a
    trained net (``open_trained``'s sources) computes them, saved to ``out`` (.npz, written
    atomically; never over an input, nor over a file unless ``overwrite``): float32 arrays named
    after the layers, ``paths``, and where the folders give them ``labels`` and ``classes``;
    ``net_classes`` (fc8's), ``dropout_scale`` (``dropout_scale``), ``crops`` and ``checkpoint``."""
    layers = check_layers(layers)
    payload = read_trained(checkpoint)
    out = check_new_file(out, inputs=[payload["path"], data], overwrite=overwrite, suffix=".npz",
                         ours=is_features_file)
    dataset = open_images(data, split, resize=saved_preprocess(payload).resize)
    net = open_trained(payload, runtime)  # the output and the data checked first: building the net takes seconds
    features = dataset_features(net, dataset, layers, ten_crop=ten_crop, batch_size=batch_size, reporter=reporter,
                                desc=f"{'+'.join(layers)} features")
    arrays = {layer: features[layer].numpy() for layer in layers}
    arrays["paths"] = np.array(image_paths(dataset), dtype=str)
    if dataset.classes is not None:
        arrays.update(labels=features["labels"].numpy(), classes=np.array(dataset.classes, dtype=str))
    arrays.update(format=np.array(FEATURES_FORMAT), net_classes=np.array(net.classes, dtype=str),
                  dropout_scale=np.float32(dropout_scale(net)),
                  crops=np.array("ten-crop mean" if ten_crop else "centre"), checkpoint=np.array(net.path))

    def save(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    write_atomically(out, save)
    return {"out": str(out), "checkpoint": net.path, "data": str(data), "images": len(dataset),
            "shapes": {layer: tuple(arrays[layer].shape) for layer in layers}, "labelled": "labels" in arrays}
