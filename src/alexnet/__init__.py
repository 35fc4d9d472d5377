"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) as the paper describes it.

    import alexnet
    model = alexnet.build_model(layout="towers", devices=["cuda:0", "cuda:1"])
    trained = alexnet.load_model("runs/my-run", layout="grouped", devices=["cpu"])
    alexnet.export_onnx(model, "alexnet.onnx")                        # ONNX (docs/export.md)
    alexnet.write_features("runs/my-run", "photos/", "fc7.npz")       # fc7 for transfer learning
"""

from .errors import AlexNetError
from .export import export_onnx
from .inference import write_features
from .model import INIT_PRESETS, LAYERS, ModelConfig, build_model, resolve
from .runtime import Runtime
from .trained import TrainedNet, load_model, open_trained
from .versions import __version__

__all__ = ["AlexNetError", "INIT_PRESETS", "LAYERS", "ModelConfig", "Runtime", "TrainedNet", "build_model",
           "export_onnx", "load_model", "open_trained", "resolve", "write_features", "__version__"]
