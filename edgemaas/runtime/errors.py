"""Errors the runtime raises. Both carry a message meant for the caller, never a traceback."""

from __future__ import annotations


class RequestError(ValueError):
    """A request the model cannot serve: names the offending field and what was expected (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"type": "InvalidRequest", "field": self.field, "message": str(self)}


class ModelLoadError(RuntimeError):
    """A model or manifest that cannot be served: missing, tampered, or unreadable by every available backend."""
