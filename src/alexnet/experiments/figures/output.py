"""Where a figure goes, checked before any long work: a command that computes features for an
hour must not fail at the end because its output folder does not exist."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

from PIL import Image

from ... import files
from ...errors import ConfigError
from ...files import is_writable_dir


def check_output(path: Union[str, Path], option: str = "--out", *, overwrite: bool = False,
                 inputs: Iterable[Union[str, Path]] = ()) -> Path:
    """``path`` as a PNG file that can be written: its folder exists and takes new files, and
    the path is new, or a figure of this package's replaced with ``overwrite`` (never an input:
    ``alexnet.files.check_output``). Raises ``ConfigError`` naming the path otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name such as {path / 'figure.png'}")
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{option} {path}: the figure is written as a PNG; give a name ending in .png")
    folder = path.parent
    if not folder.exists():
        raise ConfigError(f"{option} {path}: the folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is a file, not a folder")
    if not is_writable_dir(folder):
        raise ConfigError(f"{option} {path}: cannot write into {folder} (read-only, or no permission)")
    return files.check_output(path, option, inputs=inputs, overwrite=overwrite, ours=is_our_png)


def is_our_png(path: Path) -> bool:
    """A PNG this package drew: ``files.save_png`` signs it in its Software text chunk."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and str(image.info.get("Software", "")).startswith(files.PNG_SOFTWARE)
    except (OSError, ValueError):
        return False
