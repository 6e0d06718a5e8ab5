"""The export's error type, importable without torch (the service reads engines too)."""


class ExportError(RuntimeError):
    """Export failed (or an exported engine cannot run); the message says at which step and why."""
