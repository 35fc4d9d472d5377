"""Where a figure goes, checked before any long work: a command that computes features for an
hour must not fail at the end because its output folder does not exist."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

from PIL import Image

from ... import files
from ...errors import ConfigError


def check_output(path: Union[str, Path], option: str = "--out", *, overwrite: bool = False,
                 inputs: Iterable[Union[str, Path]] = ()) -> Path:
    """``path`` as a PNG file that can be written: its folder exists and takes new files, and
    the path is new, or a figure of this package's replaced with ``overwrite`` (never an input:
    ``alexnet.files.check_new_file``). Raises ``ConfigError`` naming the path otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file name such as {path / 'figure.png'}")
    return files.check_new_file(path, inputs=inputs, overwrite=overwrite, suffix=".png", option=option,
                                ours=is_our_png)


def is_our_png(path: Path) -> bool:
    """A PNG this package drew: ``files.save_png`` signs it in its Software text chunk."""
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and str(image.info.get("Software", "")).startswith(files.PNG_SOFTWARE)
    except (OSError, ValueError):
        return False
