"""``Closing``: a class with ``close()`` is a context manager that closes on exit (the
decision client, the agent's TPM drivers)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """``with thing:`` calls ``thing.close()`` on the way out, error or not."""

    def close(self) -> None:
        """Release what the object holds. Subclasses make it idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
