"""Errors that name what was wrong and what was expected."""


class BenchmarkError(Exception):
    """Base class for user-facing errors: the CLI prints the message without a traceback."""


class ConfigError(BenchmarkError):
    """A config file, key or value is invalid."""


class DataError(BenchmarkError):
    """A dataset folder or image is missing or unreadable."""


class CheckpointError(BenchmarkError):
    """A checkpoint is missing, corrupt or belongs to another run."""


class WeightsError(BenchmarkError):
    """A pretrained weight file is missing or has the wrong hash."""


class StorageError(BenchmarkError):
    """A file could not be written: the disk or quota is full, or the folder is read-only or not ours."""
