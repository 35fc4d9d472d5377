"""The layer table printed back: per layer and per tower, with devices, costs and exchanges."""

from __future__ import annotations

from typing import Dict, Sequence

from .spec import CROP, NetSpec

FP32_BYTES = 4


def summarize(spec: NetSpec, layout: str, devices: Sequence) -> Dict:
    """A plain dict (JSON-ready) describing ``spec`` placed on ``devices``.

    Rows are per layer and per tower: a split layer has one row per tower, holding that
    tower's share of the parameters and multiply-adds; fc8 is one row on tower 0. In the
    grouped layout both towers' rows name the same device.
    """
    devices = [str(d) for d in devices]
    tower_device = (lambda k: devices[k]) if layout == "towers" else (lambda k: devices[0])
    rows = []
    for layer in spec.layers:
        towers = layer.towers
        channels, *spatial = layer.out_shape
        for k in range(towers):
            rows.append({
                "name": layer.name,
                "tower": k,
                "device": tower_device(k),
                "output_shape": [channels // towers, *spatial],
                "params": layer.params // towers,
                "macs": layer.macs // towers,
                "after": [_op_label(op, spec) for op in layer.ops],
            })
    exchanges = []
    for point in spec.exchanges():
        values = point["values_per_direction"]
        exchanges.append({
            **point,
            "directions": list(point["directions"]),
            "bytes_per_image_per_direction": values * FP32_BYTES,
            "crosses_devices": layout == "towers" and len(set(devices)) > 1,
        })
    return {
        "variant": spec.config.variant,
        "blocks": spec.config.blocks,
        "layout": layout,
        "devices": devices,
        "input_shape": [3, CROP, CROP],
        "options": {**spec.config.as_dict(), "pool": list(spec.pool), "pool_ceil": spec.pool_ceil,
                    "dropout": float(spec.config.dropout)},
        "layers": rows,
        "totals": {
            "params": spec.params,
            "macs": spec.macs,
            "exchange_bytes_per_image": sum(
                e["bytes_per_image_per_direction"] * len(e["directions"]) for e in exchanges),
        },
        "exchanges": exchanges,
    }


def _op_label(op: str, spec: NetSpec) -> str:
    if op == "pool":
        kernel, stride = spec.pool
        return f"maxpool {kernel}/{stride}" + (" ceil" if spec.pool_ceil else "")
    if op == "dropout":
        return f"dropout {spec.config.dropout:g}"
    return OP_LABELS[op]


#: How the summary names each form of the blocks (``config.BLOCKS``).
BLOCK_TITLES = {"paper": "the paper's blocks", "authors": "the authors' blocks (layers-145.cfg)",
                "caffe": "Caffe's bvlc_alexnet blocks", "caffenet": "Caffe's CaffeNet blocks (pool before LRN)"}
#: How the summary names each block op (``spec.BLOCK_OPS``).
OP_LABELS = {"relu": "ReLU", "lrn": "LRN", "clrn": "LRN across the towers (Caffe's, k=1)",
             "cnorm": "cnorm (spatial response norm)"}


def format_summary(summary: Dict) -> str:
    options = summary["options"]
    blocks = BLOCK_TITLES[summary["blocks"]]
    lines = [
        f"AlexNet {summary['variant']}, {blocks}, layout {summary['layout']} on {', '.join(summary['devices'])}"
        f"  (input 3x224x224; LRN {'on' if options['lrn'] else 'off'}; "
        f"pooling {options['pool'][0]}x{options['pool'][0]}/{options['pool'][1]}"
        f"{', ceil rounding' if options['pool_ceil'] else ''}; init {options['init']})",
        "",
        f"{'layer':<6} {'tower':>5}  {'device':<8} {'output':>14} {'params':>12} {'mult-adds':>14}  after",
    ]
    for row in summary["layers"]:
        shape = "x".join(str(d) for d in row["output_shape"])
        after = row["after"] or ["softmax"]
        lines.append(f"{row['name']:<6} {row['tower']:>5}  {row['device']:<8} {shape:>14} "
                     f"{row['params']:>12,} {row['macs']:>14,}  {', '.join(after)}")
    totals = summary["totals"]
    lines += ["", f"total parameters: {totals['params']:,}",
              f"total multiply-adds per image: {totals['macs']:,}"]
    if summary["exchanges"]:
        lines += ["", "cross-tower exchanges (per image, fp32):"]
        for e in summary["exchanges"]:
            direction = ("each tower receives the other's" if len(e["directions"]) == 2
                         else "tower 1 sends tower 0 its")
            what = f"{e['halo']} {e['reads']} maps" if e.get("halo") else f"{e['reads']} half"
            lines.append(f"  {e['layer']:<6} {direction} {what}: "
                         f"{e['values_per_direction']:,} values = {e['bytes_per_image_per_direction']:,} bytes "
                         f"({' '.join(e['directions'])})")
        where = "crosses devices" if summary["exchanges"][0]["crosses_devices"] else "stays on one device here"
        lines.append(f"  total {totals['exchange_bytes_per_image']:,} bytes per image ({where})")
    return "\n".join(lines)
