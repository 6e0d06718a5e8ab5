"""The HTTP service and the `sttm` command. Serving imports no torch."""

__version__ = "0.1.0"
