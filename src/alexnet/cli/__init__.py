"""The ``alexnet`` command: a thin layer of options over the library's functions.

Each command module registers its commands on ``main``; library errors (a missing device,
a bad file, an impossible value) print as one ``Error:`` line and exit with status 2.
"""

from .group import main
from . import ablate, bench, caffe, data, evaluate, export, features, figures, predict, summary, train  # noqa: F401,E402  (each registers its commands)

__all__ = ["main"]
