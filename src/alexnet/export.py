"""A trained net out of the package: one ONNX graph (``alexnet export``).

    export_onnx("runs/x", "alexnet.onnx")

The net is exported in evaluation mode from its grouped layout (the towers compute the same
function), with a dynamic batch dimension. Its LRNs are ONNX ``LRN`` nodes (one per tower for
the paper's and the authors' nets, one across all maps for Caffe's); the authors' cnorm2 is in
standard operators; the paper's dropout is the multiplication by 1-p it is at test time. The
input contract is in the model's metadata: crop size, channel order, the 0-255 scale, the mean
and the class names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

import torch

try:  # the optional export extra
    import onnx
    from onnxscript import opset18 as onnx_ops
    MISSING = None
except ImportError as _error:
    onnx = onnx_ops = None
    MISSING = _error.name

from .errors import ConfigError
from .files import write_atomically
from .checkpoint import saved_preprocess, stats_from_checkpoint
from .runtime import Runtime
from .trained import open_trained

#: What to install when the exporter's packages are missing.
INSTALL = "pip install -e '.[export]' (onnx, onnxruntime, onnxscript)"
OPSET = 18


def export_onnx(checkpoint: Union[str, Path], out: Union[str, Path]) -> Dict:
    """Write ``checkpoint``'s net (a checkpoint file or a run folder) to ``out`` as ONNX; returns
    what the metadata says."""
    if MISSING is not None:
        raise ConfigError(f"exporting to ONNX needs {MISSING}: {INSTALL}")
    net = open_trained(checkpoint, Runtime(devices="cpu", amp="fp32"))
    model, payload = net.model, net.checkpoint
    preprocess = saved_preprocess(payload)
    crop = getattr(preprocess, "crop", 224)
    example = torch.zeros(2, 3, crop, crop)

    def lrn(x, size: int, alpha: float, beta: float, k: float):
        return onnx_ops.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)

    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                input_names=["crops"], output_names=["logits"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                custom_translation_table={torch.ops.alexnet.lrn.default: lrn})
    proto = program.model_proto
    metadata = input_contract(payload, preprocess, crop)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto, full_check=True)
    write_atomically(Path(out), lambda tmp: onnx.save(proto, str(tmp)))
    return {"out": str(out), **metadata}


def input_contract(payload: Dict, preprocess, crop: int) -> Dict:
    """What a runtime must feed the graph, for its metadata."""
    stats = stats_from_checkpoint(payload)
    mean = preprocess.mean
    contract = {
        "input": f"float32 (N, 3, {crop}, {crop}): RGB crops on the 0-255 scale minus the mean",
        "crop_size": str(crop), "channel_order": "RGB", "pixel_scale": "0-255",
        "resize": getattr(preprocess, "resize", "shorter-side"),
        "mean": ([round(float(v), 4) for v in stats.channel_mean] if mean == "channel" else
                 f"the {mean} mean: the 256x256 mean image of the training set, under each crop's window "
                 f"(not stored here)" if mean in ("image", "centre") else "none"),
        "divide_std": str(preprocess.divide_std).lower(),
        "classes": list(payload["classes"]),
        "model_config": payload["model_config"],
    }
    return contract
