"""The package's version (what the software a run used is: ``alexnet.machine``)."""

__version__ = "0.1.0"
