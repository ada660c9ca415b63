"""ASGI middleware refusing request bodies over a size limit (413) before they are read into memory."""
import asyncio
import json

# After deciding on a 413, read and discard up to this much more of the body (and for at most this long)
# before answering, as nginx's lingering close does: clients that send the whole body before reading the
# reply (Python's urllib and requests) would otherwise see "connection reset" instead of the 413.
DRAIN_BYTES = 256 * 2 ** 20
DRAIN_SECONDS = 10.0


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Checks Content-Length up front, and counts streamed bytes for requests without one."""

    def __init__(self, app, max_bytes, detail=None, drain_bytes=DRAIN_BYTES, drain_seconds=DRAIN_SECONDS):
        """detail: the 413's message (default: the byte count); the service states the limit it was given."""
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail or f"upload larger than {max_bytes} bytes"
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds

    async def _drain(self, receive):
        """Discard the rest of the request body, within the byte and time bounds."""
        discarded = 0
        try:
            async with asyncio.timeout(self.drain_seconds):
                while discarded <= self.drain_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    discarded += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            return

    async def _refuse(self, receive, send):
        """Answer 413; first read and discard what the client is sending (``receive`` None: nothing is)."""
        if receive is not None:
            await self._drain(receive)
        body = json.dumps({"detail": self.detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if headers.get(b"expect", b"").lower() == b"100-continue":
                # The client (curl) waits for "100 Continue" before sending: answer now, and it never uploads.
                return await self._refuse(None, send)
            return await self._refuse(receive, send)
        received, started, refused = 0, False, False

        async def limited_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer 413 now: the app's body parser would turn the exception below into a 400.
                    if not started and not refused:
                        refused = True
                        await self._refuse(receive, send)
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if refused:
                return  # the 413 has been sent; drop the app's own error response
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started and not refused:
                await self._refuse(receive, send)
