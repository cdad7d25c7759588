"""The control channel of an emulated link: one JSON object per line over TCP.

A separate process (a ``tierflow`` command, a test, an experiment script) changes a
running link by connecting to its control port and writing requests; each request line
gets one reply line. Requests::

    {"op": "get"}                                  -> {"ok": true, "params": {...}, "stats": {...}}
    {"op": "set", "params": {"bandwidth_mbps": 5}} -> {"ok": true, "params": {...}}
    {"op": "set", "params": {"up": false}}         -> {"ok": true, "params": {...}}
    {"op": "reset"}                                -> {"ok": true, "reset": 3}

``reset`` aborts every open connection through the link. A bad request is answered
``{"ok": false, "error": "..."}`` and the connection stays open for the next line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from typing import Any

from tierflow.errors import TestbedError, TierflowError

ControlHandler = Callable[[dict[str, Any]], dict[str, Any]]

_MAX_LINE_BYTES = 64 * 1024


async def serve_control(handler: ControlHandler, *, host: str, port: int) -> asyncio.Server:
    """Start serving the control protocol; ``handler`` maps a request to a reply."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(_encode(_answer(handler, line)))
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that hangs up or sends an overlong line only loses its session
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(session, host, port, limit=_MAX_LINE_BYTES)


def _answer(handler: ControlHandler, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise TestbedError("a control request must be a JSON object")
        return {"ok": True, **handler(request)}
    except (json.JSONDecodeError, TierflowError) as error:
        return {"ok": False, "error": str(error)}


def _encode(reply: dict[str, Any]) -> bytes:
    return (json.dumps(reply) + "\n").encode()


def control_request(
    address: tuple[str, int], request: dict[str, Any], *, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Send one request to a link's control port and return its reply.

    Raises
    ------
    TestbedError
        The link is unreachable or answered ``ok: false``.

    Examples
    --------
    >>> control_request(("127.0.0.1", 9001), {"op": "get"})  # doctest: +SKIP
    {'ok': True, 'params': {...}, 'stats': {...}}
    """
    try:
        with socket.create_connection(address, timeout=timeout_s) as sock:
            sock.sendall(_encode(request))
            with sock.makefile("rb") as stream:
                line = stream.readline(_MAX_LINE_BYTES)
    except OSError as error:
        raise TestbedError(f"link control {address[0]}:{address[1]}: {error}") from error
    if not line:
        raise TestbedError(f"link control {address[0]}:{address[1]} closed without a reply")
    reply: dict[str, Any] = json.loads(line)
    if not reply.get("ok"):
        raise TestbedError(f"link control {address[0]}:{address[1]}: {reply.get('error')}")
    return reply
