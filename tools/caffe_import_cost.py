"""What importing a full-size Caffe AlexNet file costs: time and peak memory of
``alexnet.caffe.read_caffemodel``, ``to_canonical`` and the whole ``alexnet import-caffe``
(``import_caffemodel``: the checkpoint written too), against just reading the file's bytes.

Writes a 1000-class file in the layout of bvlc_alexnet (V1 layers and legacy 4-d blob shapes,
as the model zoo's file has them; ``--format V2`` for the current format) into a temporary
folder with the tests' writer (tests/caffe/caffemodel_writer.py), then measures each step in a
fresh process of its own, where its peak RSS (VmHWM, reset before the step) is its alone:

    python tools/caffe_import_cost.py [--format V1|V2] [--repeats 3]

Prints, per step: the best wall time of --repeats runs (the file is in the page cache after
the first read), and the peak RSS above the process's RSS before the step, relative to the
file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("bytes", "read", "read+map", "import")


def measure(path: str, step: str) -> dict:
    """Runs ``step`` once in this process: seconds, and the RSS before and at its peak (bytes)."""
    from alexnet.caffe import read_caffemodel, to_canonical  # noqa: F401 (imports before the baseline)
    from alexnet.caffe.importer import import_caffemodel
    import torch  # noqa: F401

    before = _reset_peak_rss()
    start = time.perf_counter()
    if step == "bytes":
        with open(path, "rb") as handle:
            data = handle.read()
        del data
    elif step == "read":
        read_caffemodel(path)
    elif step == "read+map":
        to_canonical(read_caffemodel(path), path)
    else:  # the whole of alexnet import-caffe: read, map, build Caffe's net, write the checkpoint
        import_caffemodel(path, path + ".pt")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_before": before, "rss_peak": _peak_rss()}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> int:
    """The RSS now, with the peak reset to it (Linux: clear_refs 5); ru_maxrss is no use here,
    as Linux carries it over from the parent through fork and exec."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_fresh_process(path: str, step: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--measure", step, path], check=True, capture_output=True,
                         text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("V1", "V2"), default="V1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", nargs=2, metavar=("STEP", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[1], args.measure[0])))
        return
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "caffe")]
    from caffemodel_writer import write_caffemodel

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "bvlc_alexnet.caffemodel")
        write_caffemodel(path, format=args.format, legacy_shapes=args.format == "V1", num_classes=1000)
        size = os.path.getsize(path)
        shapes = "legacy" if args.format == "V1" else "current"
        print(f"file: {size / 1e6:.1f} MB ({args.format}, 1000 classes, {shapes} shapes); "
              f"python {sys.version.split()[0]}, {_versions()}")
        results = {step: [in_fresh_process(path, step) for _ in range(args.repeats)] for step in STEPS}
    base = min(r["seconds"] for r in results["bytes"])
    for step in STEPS:
        best = min(results[step], key=lambda r: r["seconds"])
        peak = max(r["rss_peak"] - r["rss_before"] for r in results[step])
        print(f"{step:>9}: {best['seconds']:6.3f} s ({best['seconds'] / base:5.1f}x reading the bytes), "
              f"peak RSS +{peak / 1e6:6.1f} MB = {peak / size:4.2f}x the file "
              f"(process before the step: {best['rss_before'] / 1e6:.0f} MB)")


def _versions() -> str:
    import google.protobuf
    import numpy
    from google.protobuf.internal import api_implementation

    return f"protobuf {google.protobuf.__version__} ({api_implementation.Type()}), numpy {numpy.__version__}"


if __name__ == "__main__":
    main()
