import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from alexnet.data import generate_builtin, load_or_compute_stats
from alexnet.model.init import canonical_init
from alexnet.model.spec import resolve


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def paper_state():
    """One seeded canonical state dict of the paper's net, shared by the layout tests."""
    return canonical_init(resolve(), "paper", seed=1234)


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def needs_gpus(n: int):
    return pytest.mark.skipif(cuda_count() < n, reason=f"needs {n} CUDA device(s); {cuda_count()} visible")


def load_tool(name: str):
    """A script in tools/ (not a package) as a module, loaded once."""
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The built-in generator at 2 training and 1 validation image per class (10 classes),
    with its statistics: a whole dataset that trains in seconds."""
    root = generate_builtin(tmp_path_factory.mktemp("data") / "tiny", train_per_class=2, val_per_class=1, workers=0)
    load_or_compute_stats(root, workers=0)
    return root
