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
                "lrn": layer.layer.lrn and spec.config.lrn,
                "pool": list(spec.pool) if layer.layer.pool else None,
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
        "layout": layout,
        "devices": devices,
        "input_shape": [3, CROP, CROP],
        "options": {"lrn": spec.config.lrn, "overlap": spec.config.overlap, "pool": list(spec.pool),
                    "num_classes": spec.config.num_classes, "dropout": float(spec.config.dropout),
                    "dropout_style": spec.config.dropout_style},
        "layers": rows,
        "totals": {
            "params": spec.params,
            "macs": spec.macs,
            "exchange_bytes_per_image": sum(
                e["bytes_per_image_per_direction"] * len(e["directions"]) for e in exchanges),
        },
        "exchanges": exchanges,
    }


def format_summary(summary: Dict) -> str:
    lines = [
        f"AlexNet {summary['variant']}, layout {summary['layout']} on {', '.join(summary['devices'])}"
        f"  (input 3x224x224; LRN {'on' if summary['options']['lrn'] else 'off'}; "
        f"pooling {summary['options']['pool'][0]}x{summary['options']['pool'][0]}"
        f"/{summary['options']['pool'][1]})",
        "",
        f"{'layer':<6} {'tower':>5}  {'device':<8} {'output':>14} {'params':>12} {'mult-adds':>14}  after",
    ]
    for row in summary["layers"]:
        shape = "x".join(str(d) for d in row["output_shape"])
        after = ["ReLU"] if row["name"] != "fc8" else ["softmax"]
        if row["lrn"]:
            after.append("LRN")
        if row["pool"]:
            after.append("maxpool {0}/{1}".format(*row["pool"]))
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
            lines.append(f"  {e['layer']:<6} {direction} {e['reads']} half: "
                         f"{e['values_per_direction']:,} values = {e['bytes_per_image_per_direction']:,} bytes "
                         f"({' '.join(e['directions'])})")
        where = "crosses devices" if summary["exchanges"][0]["crosses_devices"] else "stays on one device here"
        lines.append(f"  total {totals['exchange_bytes_per_image']:,} bytes per image ({where})")
    return "\n".join(lines)
