"""The paper's Figure 4: validation images and the training images nearest to them in fc7's
4096-dimensional space (the activations after the ReLU, of the centre crop).

The training set's features are computed once, in batches with a progress bar, and cached
beside the checkpoint (``<checkpoint>.fc7-train-<data>.pt``; in the cache folder when the
checkpoint's folder is read-only), stored as float16: ImageNet's 1.28 million training images
take 10.5 GB instead of 21. The cache is keyed by the checkpoint (its resolved path, size and
modification time in nanoseconds: hashing a 240 MB file on every call would cost seconds, and
every save of a run's checkpoint changes its mtime) and by the data (the dataset's resolved
root, the split and its number of images); a cache whose key differs, or that cannot be read,
is computed again. It is written atomically and read with ``torch.load(weights_only=True,
mmap=True)``, so the features are paged in from disk as the search reads them.

The search is exact: squared Euclidean distances ``|q|² - 2 q·d + |d|²`` as matrix products over
blocks of ``chunk`` queries by ``chunk`` database rows, keeping the k smallest per query, so
memory is bounded by the block (``chunk`` x ``chunk`` floats) however large the database.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ...data import resolve_data_root
from ...errors import ConfigError
from ...files import cache_entry, is_writable_dir, save_png, save_torch
from ...inference import dataset_features, open_split
from ...model.spec import CROP
from ...precision import precision_name
from ...progress import SILENT, Reporter
from ...run_folder import trained_data
from ...runtime import Runtime
from ...trained import TrainedNet, open_trained, read_trained
from .filters import checkpoint_label
from .output import check_output

FORMAT = "alexnet-fc7-features"
VERSION = 1
LAYER = "fc7"
CHUNK = 4096  # a 4096 x 4096 block of distances: 64 MB


# -- the search ---------------------------------------------------------------------------------
def nearest_neighbours(queries: torch.Tensor, database: torch.Tensor, k: int,
                       chunk: int = CHUNK) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``database`` (N, D) nearest to each row of ``queries`` (Q, D) by
    Euclidean distance: (distances (Q, k) float32, indices (Q, k) int64), nearest first.
    Exact, in blocks of ``chunk`` x ``chunk`` (any dtype in; float32 arithmetic)."""
    if chunk < 1:
        raise ConfigError(f"chunk must be at least 1; got {chunk}")
    if queries.dim() != 2 or database.dim() != 2 or queries.shape[1] != database.shape[1]:
        raise ConfigError(f"queries (Q, D) and database (N, D) must share D; got {tuple(queries.shape)} "
                          f"and {tuple(database.shape)}")
    k = min(int(k), database.shape[0])
    out_d, out_i = [], []
    for qs in range(0, queries.shape[0], chunk):
        q = queries[qs:qs + chunk].float()
        q2 = (q * q).sum(dim=1, keepdim=True)  # (cq, 1)
        best_d = torch.empty((q.shape[0], 0), dtype=torch.float32, device=q.device)
        best_i = torch.empty((q.shape[0], 0), dtype=torch.int64, device=q.device)
        for ds in range(0, database.shape[0], chunk):
            d = database[ds:ds + chunk].to(q.device).float()
            squared = (q2 - 2.0 * q @ d.T + (d * d).sum(dim=1)[None, :]).clamp_min_(0)  # (cq, cd)
            rows = torch.arange(ds, ds + d.shape[0], device=q.device).expand(q.shape[0], -1)
            candidates_d = torch.cat([best_d, squared], dim=1)
            candidates_i = torch.cat([best_i, rows], dim=1)
            best_d, where = candidates_d.topk(min(k, candidates_d.shape[1]), dim=1, largest=False, sorted=True)
            best_i = candidates_i.gather(1, where)
        out_d.append(best_d.sqrt())
        out_i.append(best_i)
    if not out_d:
        return torch.empty((0, k)), torch.empty((0, k), dtype=torch.int64)
    return torch.cat(out_d), torch.cat(out_i)


# -- the features -------------------------------------------------------------------------------
# fc7 after the ReLU, of the centre crop, is ``alexnet.inference.dataset_features``'s, the
# function behind alexnet features.
def feature_key(checkpoint: Union[str, Path], root: Union[str, Path], split: str, images: int,
                precision: str = "fp32") -> Dict:
    """What a cache of features must match: the checkpoint (resolved path, size, mtime in ns),
    the data (resolved root, split, number of images) and the precision they were computed in."""
    checkpoint = Path(checkpoint).resolve()
    status = checkpoint.stat()
    return {"format": FORMAT, "version": VERSION, "layer": LAYER, "checkpoint": str(checkpoint),
            "checkpoint_bytes": status.st_size, "checkpoint_mtime_ns": status.st_mtime_ns,
            "data": str(Path(root).resolve()), "split": split, "images": int(images), "precision": precision}


def feature_cache_path(checkpoint: Union[str, Path], root: Union[str, Path], split: str) -> Path:
    """Beside the checkpoint (one file per dataset and split, replaced when the checkpoint
    changes), or in the cache folder when the checkpoint's folder is read-only."""
    checkpoint = Path(checkpoint).resolve()
    data = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    suffix = f".{LAYER}-{split}-{data}.pt"
    if is_writable_dir(checkpoint.parent):
        return checkpoint.with_name(checkpoint.name + suffix)
    return cache_entry(LAYER, checkpoint, suffix)


def _read_cache(path: Path, key: Dict) -> Optional[Dict]:
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a damaged or foreign file is computed again
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    return cached


def cached_features(net: TrainedNet, checkpoint: Union[str, Path], dataset, root: Union[str, Path], split: str, *,
                    batch_size: int = 64, reporter: Reporter = SILENT) -> Dict:
    """The split's fc7 features from the cache when its key (``checkpoint``, the data) matches,
    else computed by ``net`` (float16) and cached. Returns {"features", "labels", "path", "reused"}."""
    key = feature_key(checkpoint, root, split, len(dataset), precision_name(net.amp_dtype))
    path = feature_cache_path(checkpoint, root, split)
    cached = _read_cache(path, key)
    if cached is not None:
        return {"features": cached["features"], "labels": cached["labels"], "path": path, "reused": True}
    computed = dataset_features(net, dataset, [LAYER], batch_size=batch_size, dtype=torch.float16, reporter=reporter,
                                desc=f"fc7 features ({split})")
    payload = {"key": key, "features": computed[LAYER], "labels": computed["labels"]}
    save_torch(path, payload)
    return {"features": payload["features"], "labels": payload["labels"], "path": path, "reused": False}


# -- the picture --------------------------------------------------------------------------------
def choose_queries(images: Optional[Sequence[int]], count: int, seed: int, available: int) -> List[int]:
    """``images`` (validation indices, checked), or ``count`` of them drawn with ``seed``."""
    if images is not None:
        images = [int(i) for i in images]
        bad = [i for i in images if not 0 <= i < available]
        if bad:
            raise ConfigError(f"--images {bad[0]}: the validation split has {available} images "
                              f"(indices 0 to {available - 1})")
        if not images:
            raise ConfigError("--images: give at least one validation index")
        return images
    if count < 1:
        raise ConfigError(f"--count must be at least 1; got {count}")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(available, generator=generator)[:count].tolist()


def _shown(image: torch.Tensor):
    """A stored (3, 256, 256) uint8 image's centre 224 crop, as the net saw it, for imshow."""
    top = (image.shape[-2] - CROP) // 2
    left = (image.shape[-1] - CROP) // 2
    return image[:, top:top + CROP, left:left + CROP].permute(1, 2, 0).numpy()


def write_neighbours_png(rows: List[Dict], val_set, train_set, classes: Sequence[str], path: Union[str, Path],
                         title: str = "") -> Path:
    """One row per query: the query (red frame), then its neighbours, nearest first; under each
    image its class (green where it is the query's class) and its fc7 distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + max(len(r["neighbours"]) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.75 * columns, 2.05 * len(rows) + 0.5), squeeze=False)
    for ax_row, row in zip(axes, rows):
        query_class = row["label"]
        ax = ax_row[0]
        ax.imshow(_shown(val_set[row["query"]][0]))
        ax.set_xlabel(f"query: {classes[query_class]}\nval #{row['query']}", fontsize=8, color="tab:red")
        for spine in ax.spines.values():
            spine.set(color="tab:red", linewidth=3)
        for ax, hit in zip(ax_row[1:], row["neighbours"]):
            ax.imshow(_shown(train_set[hit["index"]][0]))
            colour = "tab:green" if hit["label"] == query_class else "black"
            ax.set_xlabel(f"{classes[hit['label']]}\nd = {hit['distance']:.1f}", fontsize=8, color=colour)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in ax_row[1 + len(row["neighbours"]):]:
            ax.set_axis_off()
    axes[0][0].set_title("validation image", fontsize=9)
    for j in range(1, columns):
        axes[0][j].set_title(f"neighbour {j}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_png(fig, path)


def draw_neighbours(checkpoint_or_run: Union[str, Path], path: Union[str, Path], *, data=None,
                    images: Optional[Sequence[int]] = None, count: int = 5, k: int = 6, seed: int = 0,
                    batch_size: int = 64, runtime: Runtime = Runtime(), chunk: int = CHUNK,
                    reporter: Reporter = SILENT, overwrite: bool = False) -> Dict:
    """Figure 4 for a trained net (``open_trained``'s sources): for validation images
    (``images``, or ``count`` drawn with ``seed``), the ``k`` training images nearest by
    Euclidean distance of fc7 after the ReLU, as a PNG at ``path``. ``data``: the dataset
    (default: the one the run trained on). Returns the rows drawn and where things went."""
    out = check_output(path, overwrite=overwrite, inputs=[checkpoint_or_run])
    if k < 1:
        raise ConfigError(f"-k must be at least 1; got {k}")
    payload = read_trained(checkpoint_or_run)
    root = resolve_data_root(trained_data(payload["config"]) if data is None else data, reporter)
    hint = "; give the run's data with --data"
    train_set, val_set = open_split(payload, root, "train", hint), open_split(payload, root, "val", hint)
    queries = choose_queries(images, count, seed, len(val_set))
    net = open_trained(payload, runtime)  # the data and the queries checked first: building the net takes seconds
    database = cached_features(net, net.path, train_set, root, "train", batch_size=batch_size, reporter=reporter)
    query = dataset_features(net, val_set, [LAYER], batch_size=batch_size, indices=queries,
                             desc="fc7 features (queries)")
    query_labels = query["labels"]
    distances, indices = nearest_neighbours(query[LAYER], database["features"], k, chunk)
    labels = database["labels"]
    rows = [{"query": q, "label": int(query_labels[r]),
             "neighbours": [{"index": int(i), "label": int(labels[i]), "distance": float(d)}
                            for d, i in zip(distances[r].tolist(), indices[r].tolist())]}
            for r, q in enumerate(queries)]
    progress = net.checkpoint.get("progress") or {}
    epoch = f", after epoch {progress['epoch']}" if progress.get("epoch") is not None else ""
    write_neighbours_png(rows, val_set, train_set, net.classes, out,
                         title=f"{checkpoint_label(net.path)}{epoch}: nearest training images by fc7 distance")
    return {"checkpoint": net.path, "data": str(root), "rows": rows, "classes": net.classes,
            "features": str(database["path"]), "features_reused": database["reused"], "saved_to": str(out)}
