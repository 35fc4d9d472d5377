"""The bytes per training step of --parallel data, --parallel hybrid and the paper's two towers,
for the paper's net: the table of docs/distributed.md.

    python tools/communication.py                          # batch 128 and 256, K = 2, 4, 8
    python tools/communication.py --batches 128,256 --processes 2,4,8 --measure-up-to 2 --json comm.json

K gloo processes on this machine measure where K <= --measure-up-to (default: the cores); the
layer table computes the rest (``alexnet.experiments.bench.communication``). Prints the
markdown table; --json saves every figure, per collective, with the settings.
"""

from __future__ import annotations

import argparse
import json
import sys

from alexnet.experiments.bench.communication import communication_report
from alexnet.machine import describe


def _numbers(text: str):
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=_numbers, default=(128, 256), help="global batch sizes, comma-separated")
    parser.add_argument("--processes", type=_numbers, default=(2, 4, 8), help="numbers of processes K")
    parser.add_argument("--measure-up-to", type=int, default=None,
                        help="measure with K gloo processes up to this K (default: this machine's cores)")
    parser.add_argument("--json", default=None, help="save the figures here")
    args = parser.parse_args(argv)
    report = communication_report(args.batches, args.processes, args.measure_up_to,
                                  log=lambda message: print(f"[communication] {message}", file=sys.stderr))
    print("\n".join(report["table"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**{k: v for k, v in report.items() if k != "table"}, "machine": describe(),
                       "command": sys.argv}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
