"""The package version, in one place (read by checkpoints and ``unisurg --version``)."""

__version__ = "0.1.0"
