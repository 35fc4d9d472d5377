"""The CPU costs behind the paper's net's memory layout (docs/benchmarks.md, "What made the
paper's net fast on the CPU"), each timed on its own with ``torch.utils.benchmark`` at batch 64:

- max-pooling conv1's output (64×96×55×55, 3×3 windows, stride 2) in NCHW and in NHWC;
- padding a 224 crop to 227 and handing it over in NHWC: ``F.pad`` then a conversion, against
  ``prepare_input(..., channels_last=True)``, which pads straight into NHWC;
- writing an activation-sized tensor (74 MB) freshly allocated, against writing one already
  allocated: the first pays for its page faults.

    python tools/cpu_layout_costs.py

Prints the median time of each; compare them side by side, from one run on one machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from alexnet.model.column import prepare_input


def main() -> None:
    torch.manual_seed(0)
    conv1 = torch.randn(64, 96, 55, 55)  # conv1's output at batch 64: 74 MB in fp32
    conv1_nhwc = conv1.contiguous(memory_format=torch.channels_last)
    crops = torch.randn(64, 3, 224, 224)
    allocated = torch.empty_like(conv1)
    cases = {
        "max-pool 3/2 of conv1's output, NCHW": lambda: F.max_pool2d(conv1, 3, 2),
        "max-pool 3/2 of conv1's output, NHWC": lambda: F.max_pool2d(conv1_nhwc, 3, 2),
        "224 crops: F.pad to 227, then NHWC": lambda: F.pad(crops, (0, 3, 0, 3)).contiguous(
            memory_format=torch.channels_last),
        "224 crops: prepare_input (into NHWC)": lambda: prepare_input(crops, channels_last=True),
        "a fresh 74 MB tensor, written": lambda: torch.empty(64, 96, 55, 55).fill_(1.0),
        "an allocated 74 MB tensor, written": lambda: allocated.fill_(1.0),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, run in cases.items():
        measurement = Timer("run()", globals={"run": run}).blocked_autorange(min_run_time=2)
        print(f"{name:38s} median {measurement.median * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
