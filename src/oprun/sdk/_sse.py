"""Server-Sent Events, read as the HTML standard says, with no I/O.

`SSEDecoder` is fed text as it arrives, in chunks of any size, and returns the
events each chunk completes. It splits lines only on CR, LF and CRLF (not on the
other Unicode line breaks ``str.splitlines`` knows, which may appear inside an
event's JSON data), keeps a CR that ends one chunk until it knows whether an LF
starts the next, and follows the standard's field rules: ``data`` lines are joined
with LF, an ``id`` containing NUL is ignored, ``retry`` must be all digits, lines
starting with ``:`` are comments, and an event with no data is not dispatched.
See https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its type, data, the last event id seen, and a retry hint."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns a stream of text into `ServerSentEvent` values (one decoder per connection).

    `last_event_id` is the id to resume from (``Last-Event-ID``) and `retry` the
    reconnection delay in milliseconds the server asked for, if any; both outlive
    the event that set them, as the standard says.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, text: str) -> list[ServerSentEvent]:
        """The events completed by `text` (the next piece of the stream)."""
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if not text:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        events: list[ServerSentEvent] = []
        buffer = self._buffer + text
        start = 0
        for match in _LINE_END.finditer(buffer):
            event = self._line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
            if start == len(buffer) and match.group() == "\r":
                self._pending_cr = True  # the CR of a CRLF split across two chunks?
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(
            event=event, data="\n".join(data), id=self.last_event_id, retry=self.retry
        )


def encode(event: ServerSentEvent) -> str:
    """The wire text of one event (the inverse of `SSEDecoder.feed`, for tests and tools).

    Data lines are split on CR, LF and CRLF, as the decoder joins them with LF.
    """
    lines: list[str] = []
    if event.retry is not None:
        lines.append(f"retry: {event.retry}")
    if event.id:
        lines.append(f"id: {event.id}")
    if event.event != "message":
        lines.append(f"event: {event.event}")
    data = event.data.replace("\r\n", "\n").replace("\r", "\n")
    lines.extend(f"data: {part}" for part in data.split("\n"))
    return "\n".join(lines) + "\n\n"
