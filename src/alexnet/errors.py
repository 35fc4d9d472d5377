"""Errors a user can act on. The CLI prints any of these as one line, without a traceback."""


class AlexNetError(Exception):
    """Base class: the message names the option, file or value and what would be right."""


class ConfigError(AlexNetError, ValueError):
    """An option or setting has an impossible value."""


class DeviceError(ConfigError):
    """A requested device does not exist or its backend is unavailable (a --devices problem)."""


class DataError(AlexNetError, ValueError):
    """A dataset, image or statistics file is missing or unreadable."""


class CheckpointError(AlexNetError, ValueError):
    """A checkpoint or run folder is missing, unreadable or does not fit the model."""


class TrainingError(AlexNetError, RuntimeError):
    """Training cannot go on (for example, the loss became NaN)."""


class InputError(AlexNetError, ValueError):
    """A batch handed to the network has the wrong shape."""


class StorageError(AlexNetError, OSError):
    """A file or folder could not be written or read: no space, read-only, no permission, a
    folder where a file belongs, a symlink loop. The message names the path and what to do."""


class BusyError(AlexNetError, RuntimeError):
    """Another process is writing the same run (or ablation) folder."""


class CaffeModelError(CheckpointError):
    """A Caffe .caffemodel file is unreadable, or is not the AlexNet/CaffeNet this package
    reimplements (a missing or extra layer, a wrong shape). The message names the file."""
