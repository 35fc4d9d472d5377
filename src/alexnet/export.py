"""A trained net out of the package: one ONNX graph (``alexnet export``).

    export_onnx("runs/x", "alexnet.onnx")                        # a checkpoint, a run folder, a .caffemodel
    export_onnx(build_model(num_classes=10), "x.onnx")           # a net built or loaded in Python
    export_onnx("w.pt", "x.onnx", settings={"lrn": False})       # a bare state dict, and which net it is

The net is exported in evaluation mode from its grouped layout on the CPU in fp32 (the towers
compute the same function), with a dynamic batch dimension. The graph holds only what the net
computes: conv1 reads the 224 crop with cuda-convnet's zero padding as its own asymmetric
``pads`` (the model pads with one ``F.pad`` while it is exported: ``model.column.prepare_input``),
the LRNs are ONNX ``LRN`` nodes (one per tower for the paper's and the authors' nets, split and
joined; one across all maps for Caffe's), the authors' cnorm2 is in standard operators, the
paper's dropout is the multiplication by 1-p it is at test time. The input contract is in the
model's metadata: crop size, channel order, the 0-255 scale, the mean and the class names,
where they are known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .caffe.importer import CAFFE_PREPROCESS
from .checkpoint import (as_read, checkpoint_payload, read_checkpoint, resolve_checkpoint_path, saved_model,
                         saved_preprocess, stats_from_checkpoint)
from .data.preprocess import PreprocessConfig
from .errors import CheckpointError, ConfigError
from .files import check_new_file, write_atomically
from .model.build import build_model
from .model.config import ModelConfig
from .model.spec import CAFFE_BLOCKS, CROP
from .runtime import Runtime
from .trained import open_trained, read_trained

#: What to install when the exporter's packages are missing.
INSTALL = "pip install -e '.[export]' (onnx, onnxruntime, onnxscript)"
OPSET = 18
#: How the exporter runs the net: one device, no autocast, the stock modules' values.
EXPORT_RUNTIME = Runtime(devices="cpu", amp="fp32")
#: The options that say which net a bare state dict holds (``alexnet export``'s, and the
#: ``settings`` keys of ``export_onnx``).
NET_OPTIONS = "--variant, --blocks, --no-lrn, --no-overlap, --no-overlap-as, --dropout, --dropout-style"
#: What the metadata says where the net came without dataset statistics.
NO_MEAN = ("unknown: the net came without its training set's statistics; subtract the mean of the images "
           "it was trained on")


def exporter():
    """onnx and onnxscript's opset, imported when an export needs them (they take a second to
    import, which ``import alexnet`` should not), or one line saying what to install."""
    try:
        import onnx
        from onnxscript import opset18
    except ImportError as error:
        raise ConfigError(f"exporting to ONNX needs {error.name}: {INSTALL}") from None
    return onnx, opset18


@dataclass
class Exportable:
    """A net to export, as a checkpoint's contents (``read_checkpoint``'s shape), and what of
    its input contract is known: a net built in Python has no class names or preprocessing."""

    payload: Dict
    inputs: List[Path] = field(default_factory=list)  # the files it was read from: never written over
    classes_known: bool = True
    preprocess_known: bool = True


def export_onnx(source: Union[str, Path, Mapping, nn.Module], out: Union[str, Path], *,
                classes: Optional[Sequence[str]] = None, settings: Optional[Mapping] = None,
                overwrite: bool = False) -> Dict:
    """Write a net to ``out`` as ONNX; returns what the metadata says (and ``out``).

    ``source``: a checkpoint file, a run folder (its last checkpoint), a Caffe ``.caffemodel``,
    a checkpoint read with ``read_checkpoint``, a net object (``build_model``, ``load_model``,
    torch.hub: any layout, device or precision), or a bare state dict file
    (``torch.save(model.state_dict(), ...)``), which needs ``settings``: the ``ModelConfig``
    fields that say which net it is (``{"variant": "one-gpu"}``, ``{"lrn": False}``; the class
    count is fc8's). ``classes``: class names for a net that has none of its own. ``out`` is
    never one of the files read, and an existing file is replaced only with ``overwrite``.
    """
    onnx, onnx_ops = exporter()
    exportable = exportable_net(source, classes, settings)
    out = check_new_file(out, inputs=exportable.inputs, overwrite=overwrite, ours=is_exported)
    net = open_trained(exportable.payload, EXPORT_RUNTIME)
    crop = saved_preprocess(exportable.payload).crop
    example = torch.zeros(2, 3, crop, crop)

    def lrn(x, size: int, alpha: float, beta: float, k: float):
        return onnx_ops.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)

    program = torch.onnx.export(net.model, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                input_names=["crops"], output_names=["logits"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                custom_translation_table={torch.ops.alexnet.lrn.default: lrn})
    proto = program.model_proto
    metadata = input_contract(exportable, crop)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto, full_check=True)
    write_atomically(out, lambda tmp: onnx.save(proto, str(tmp)))
    return {"out": str(out), **metadata}


def exportable_net(source, classes: Optional[Sequence[str]] = None,
                   settings: Optional[Mapping] = None) -> Exportable:
    """``export_onnx``'s ``source`` as a checkpoint's contents, whatever it is."""
    if isinstance(source, nn.Module):
        if settings:
            raise ConfigError("settings: a net object says which net it is; settings are for a bare state dict file")
        return from_module(source, classes)
    if isinstance(source, Mapping):
        return Exportable(dict(source), [Path(source["path"])] if "path" in source else [],
                          classes_known=True)
    path = resolve_checkpoint_path(source)
    if settings:
        return from_state_dict(path, settings, classes)
    try:
        payload = read_trained(path)
    except CheckpointError:
        if bare_state_dict(path) is None:
            raise
        raise CheckpointError(f"{path}: a bare state dict, which does not say which net it is; name the net with "
                              f"its options ({NET_OPTIONS}), e.g. --variant two-gpu --blocks paper") from None
    return Exportable(payload, [path])


def from_module(model: nn.Module, classes: Optional[Sequence[str]] = None) -> Exportable:
    """A net object: its canonical weights (any layout, device, dtype), with the checkpoint it was
    loaded from where it carries one (``load_model``'s ``.checkpoint`` and ``.classes``)."""
    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(model, "to_canonical"):
        raise ConfigError(f"{type(model).__name__}: not an alexnet net; export one from build_model, load_model or "
                          f"torch.hub (torchvision's alexnet is another net)")
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    loaded = getattr(model, "checkpoint", None)
    own = getattr(model, "classes", None)
    names = list(classes if classes is not None else own if own is not None else [])
    if loaded is not None:
        payload = {**loaded, "model": state, "classes": names or list(loaded["classes"])}
        return Exportable(payload, [Path(loaded["path"])])
    crop = CAFFE_PREPROCESS.crop if spec.config.blocks in CAFFE_BLOCKS else CROP
    payload = checkpoint_payload(model=model, classes=names or [str(i) for i in range(spec.config.num_classes)],
                                 preprocess=PreprocessConfig(crop=crop))
    payload["model"] = state
    return Exportable(as_read(payload, f"<{type(model).__name__}>"), classes_known=bool(names),
                      preprocess_known=False)


def bare_state_dict(path: Path) -> Optional[Dict[str, torch.Tensor]]:
    """The file's tensors if it is a bare state dict of an alexnet net (``torch.save(
    model.state_dict(), path)``: parameter names to tensors, conv1 to fc8), else None."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a file torch reads safely: read_checkpoint has said why
        return None
    if (not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values())
            or not {"conv1.weight", "fc8.weight"} <= set(state)):
        return None
    return state


def from_state_dict(path: Path, settings: Mapping, classes: Optional[Sequence[str]] = None) -> Exportable:
    """A bare state dict and the settings that say which net it is (the class count is fc8's)."""
    state = bare_state_dict(path)
    if state is None:
        try:
            read_checkpoint(path)
        except CheckpointError:
            raise CheckpointError(f"{path}: neither an alexnet checkpoint nor a bare state dict of an alexnet "
                                  f"net (parameter names conv1.weight ... fc8.bias)") from None
        raise ConfigError(f"{path}: a checkpoint, which says which net it holds; {NET_OPTIONS} are for a bare "
                          f"state dict")
    ModelConfig.reject_unknown(settings, f"{path}: ")
    config = ModelConfig(**{**settings, "num_classes": int(state["fc8.weight"].shape[0])})
    model = build_model(config, initialize=False)
    check_shapes(path, state, model.state_dict(), ", ".join(f"{k}={v}" for k, v in settings.items()))
    model.load_state_dict(state)
    exportable = from_module(model, classes)
    exportable.inputs = [path]
    return exportable


def check_shapes(path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                 named: str) -> None:
    """The file's tensors are the named net's, name by name and shape by shape, or one line
    saying where they differ."""
    for name, value in expected.items():
        if name not in state:
            raise CheckpointError(f"{path}: holds no {name}, which the net named ({named}) has")
        if tuple(state[name].shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: its {name} is {tuple(state[name].shape)}, the net named ({named}) has "
                                  f"{tuple(value.shape)}: not that net")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: holds {extra[0]}, which the net named ({named}) has not")


#: What the graph's metadata says it is: how an earlier export is recognised (``is_exported``).
FORMAT = "alexnet-onnx"


def is_exported(path: Path) -> bool:
    """An ONNX file this package exported: its metadata, written after the graph, names the
    format (or, from before it did, the net's ModelConfig)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - (1 << 20)))
            tail = handle.read()
    except OSError:
        return False
    return FORMAT.encode() in tail or b"model_config" in tail


def input_contract(exportable: Exportable, crop: int) -> Dict:
    """What a runtime must feed the graph, for its metadata: what is known of it."""
    payload = exportable.payload
    contract = {"format": FORMAT,
                "input": f"float32 (N, 3, {crop}, {crop}): RGB crops on the 0-255 scale minus the mean",
                "crop_size": str(crop), "channel_order": "RGB", "pixel_scale": "0-255",
                "mean": mean_of(payload) if payload.get("stats") else NO_MEAN}
    if exportable.preprocess_known:
        preprocess = saved_preprocess(payload)
        contract.update(resize=preprocess.resize, divide_std=str(preprocess.divide_std).lower())
    contract["num_classes"] = str(saved_model(payload).num_classes)
    if exportable.classes_known:
        contract["classes"] = list(payload["classes"])
    contract["model_config"] = saved_model(payload).as_dict()
    return contract


def mean_of(payload: Dict):
    """The mean the preprocessing subtracts: the per-channel values, or what the mean image is."""
    mean = saved_preprocess(payload).mean
    if mean == "channel":
        return [round(float(v), 4) for v in stats_from_checkpoint(payload).channel_mean]
    if mean in ("image", "centre"):
        return (f"the {mean} mean: the 256x256 mean image of the training set, under each crop's window "
                f"(not stored here)")
    return "none"
