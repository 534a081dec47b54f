"""A transport that keeps what the front writes, for driving ``proxy.front`` connections without sockets."""

from __future__ import annotations

import asyncio
from typing import Any


class MemoryTransport(asyncio.Transport):
    """What the front writes to one client connection, kept; nothing is read from it and nothing buffers."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self._peer = peer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Nothing to flush."""

    def pause_reading(self) -> None:
        """The test sends nothing more meanwhile."""

    def resume_reading(self) -> None:
        """The test sends when it likes."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """No buffer."""

    def get_write_buffer_size(self) -> int:
        return 0
