#!/usr/bin/env python3
"""A Sluice stream consumer that never loses or repeats an event across disconnects, gateways
and restarts. Python 3 standard library only: copy the file, no pip.

The trick is the SSE event id. Every `id:` a Sluice gateway sends is a cursor: the position after
that event in every partition of the stream. The client keeps the last id it saw and sends it
back as `Last-Event-ID` when it reconnects, to *any* gateway, and the stream continues exactly
after that event. So this program:

- parses the stream the way a browser's EventSource does (the WHATWG "interpreting an event
  stream" rules, in `SseParser` below), id-only checkpoint frames included;
- prints each event as one JSON line {"id": ..., "event": ..., "data": ...} on stdout, and
  warnings on stderr (an `event: gap` says events were lost to Kafka's retention; the
  `event: sluice.caught-up` marker, noted there too, says the backlog is done);
- after a disconnect waits the server's `retry:` (jittered) and reconnects, to the next
  `--gateway` in turn, with `Last-Event-ID`;
- with `--cursor-file`, saves the cursor after printing, so a restart resumes where it stopped.

    python3 sluice_consumer.py --stream demo --from earliest --cursor-file demo.cursor
"""

import argparse
import http.client
import json
import os
import random
import re
import sys
import time
import urllib.parse

# Any of CRLF, CR or LF ends a line. The alternation tries CRLF first.
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SseParser:
    """Incremental text/event-stream parser; chunks may split lines (even a CRLF) anywhere."""

    def __init__(self):
        self._line = b""  # bytes of the unterminated line; decoded once whole
        self._after_cr = False  # the last chunk ended in CR: an LF next completes a CRLF
        self._started = False  # a byte order mark may open the first line only
        self._data = []
        self._event_type = ""
        self._id_buffer = ""
        self.last_event_id = ""  # what to send as Last-Event-ID ("" = none)
        self.retry_ms = None  # the server's reconnection delay, once it sent one

    def feed(self, chunk):
        """Consume bytes; return the events they completed, as (id, event, data) tuples."""
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        buffer, start, events = self._line + chunk, 0, []
        for end in _LINE_END.finditer(buffer):
            self._after_cr = end.group() == b"\r" and end.end() == len(buffer)
            event = self._process_line(buffer[start : end.start()])
            start = end.end()
            if event is not None:
                events.append(event)
        self._line = buffer[start:]
        return events

    def _process_line(self, raw):
        if not self._started:
            self._started = True
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        line = raw.decode("utf-8", errors="replace")
        if line == "":
            return self._dispatch()
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "":
            pass  # a comment, such as the gateway's heartbeat: it only keeps the connection alive
        elif field == "data":
            self._data.append(value)
        elif field == "event":
            self._event_type = value
        elif field == "id" and "\0" not in value:
            self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        # any other field is ignored, as the standard says

    def _dispatch(self):
        # A blank line ends a frame. Its id becomes the last event id even when the frame has no
        # data: that is how an id-only checkpoint moves the cursor without dispatching an event.
        self.last_event_id = self._id_buffer
        event_type, self._event_type = self._event_type or "message", ""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return (self.last_event_id or None, event_type, data)


class Reconnect(Exception):
    """The connection ended; try again, after `wait` seconds if the server said so."""

    def __init__(self, reason, wait=None):
        super().__init__(reason)
        self.wait = wait


class Done(Exception):
    """--max-events printed."""


class Consumer:
    def __init__(self, args):
        self.args = args
        self.last_id = load_cursor(args.cursor_file) if args.cursor_file else None
        self.saved_id = self.last_id
        self.retry = 3.0  # seconds; what EventSource assumes until the server sends retry:
        self.printed = 0

    def run(self):
        if self.args.max_events == 0:
            return
        failures_in_a_row = 0
        for attempt in range(sys.maxsize):
            gateway = self.args.gateways[attempt % len(self.args.gateways)]
            printed_before = self.printed
            try:
                self.stream_once(gateway)
                raise Reconnect("the gateway ended the stream")
            except Done:
                return
            except Reconnect as reconnect:
                reason, wait = str(reconnect), reconnect.wait
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out
                reason, wait = f"connection failed: {error!r}", None
            # Back off while nothing gets through (every gateway down), up to 16 x the delay.
            failures_in_a_row = 0 if self.printed > printed_before else min(failures_in_a_row + 1, 4)
            if wait is None:
                wait = self.retry * 2 ** max(failures_in_a_row - 1, 0)
            # Jitter, so that the clients of a gateway that died do not all come back at once.
            wait = min(wait * random.uniform(0.5, 1.5), 60.0)
            warn(f"{gateway}: {reason}; reconnecting in {wait:.2f}s")
            time.sleep(wait)

    def stream_once(self, gateway):
        url = urllib.parse.urlsplit(gateway.rstrip("/"))
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        # A quiet stream still gets a heartbeat comment every 15 s: much longer silence means the
        # connection is dead (a pod gone without closing its sockets), so the read times out.
        connection = connection_class(url.netloc, timeout=45)
        query = [("from", self.args.start)]
        query += [("key", key) for key in self.args.key]
        query += [("type", event_type) for event_type in self.args.type]
        path = f"{url.path}/v1/streams/{urllib.parse.quote(self.args.stream)}?{urllib.parse.urlencode(query)}"
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status == 503:
                # Too many connections, or draining: the gateway says when to come back.
                retry_after = response.getheader("Retry-After", "")
                body = response.read().decode(errors="replace")
                raise Reconnect(f"503 {body}", int(retry_after) if retry_after.isdigit() else None)
            if response.status != 200:
                # 400 (a bad cursor or query) or 404 (no such stream): retrying will not help.
                body = response.read().decode(errors="replace")
                sys.exit(f"sluice_consumer: {gateway}{path}: {response.status} {body}")

            parser = SseParser()  # a fresh parser per connection; the cursor lives on in self
            while chunk := response.read1(65536):
                for event_id, event_type, data in parser.feed(chunk):
                    if event_type == "gap":
                        warn_gap(data)
                    elif event_type == "sluice.caught-up":
                        # Everything the stream held when this connection opened has been
                        # printed; what follows is live. Not an event of the stream.
                        warn("caught up: what follows is live")
                    else:
                        line = {"id": event_id, "event": event_type, "data": data}
                        print(json.dumps(line, ensure_ascii=False, separators=(",", ":")), flush=True)
                        self.printed += 1
                    if event_id:
                        self.last_id = event_id
                    if self.printed == self.args.max_events:
                        self.save_cursor()
                        raise Done()
                # After the events: an id-only checkpoint frame moves the cursor without an event.
                if parser.last_event_id:
                    self.last_id = parser.last_event_id
                if parser.retry_ms is not None:
                    self.retry = parser.retry_ms / 1000
                # Saved after printing: a crash in between repeats a few events on restart,
                # never loses one.
                self.save_cursor()
        finally:
            connection.close()

    def save_cursor(self):
        """Write the cursor file if the cursor moved: a temporary file renamed over the old one,
        so a crash never leaves half a cursor."""
        if not self.args.cursor_file or not self.last_id or self.last_id == self.saved_id:
            return
        temporary = self.args.cursor_file + ".tmp"
        with open(temporary, "w", encoding="ascii") as file:
            file.write(self.last_id + "\n")
        os.replace(temporary, self.args.cursor_file)
        self.saved_id = self.last_id


def load_cursor(path):
    """The cursor saved by an earlier run; None when the file does not exist yet."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip() or None
    except FileNotFoundError:
        return None


def warn(message):
    print(f"sluice_consumer: {message}", file=sys.stderr, flush=True)


def warn_gap(data):
    """`event: gap`: the cursor pointed at events Kafka no longer holds; the stream goes on from
    the oldest event it has. Its data says what was lost, per partition."""
    try:
        gap = json.loads(data)
        lost = ", ".join(
            f"partition {p['partition']}: {p['lost']} events (offsets {p['from']} to {p['to'] - 1})"
            for p in gap["partitions"]
        )
    except (ValueError, KeyError, TypeError):
        lost = data
    warn(f"warning: events were lost to Kafka's retention: {lost}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gateway",
        dest="gateways",
        action="append",
        metavar="URL",
        help="a gateway's base URL; repeat it to move to the next gateway on every reconnect "
        "(default: $GATEWAY_URL, comma-separated, or http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--stream", default=os.environ.get("STREAM", "demo"), metavar="NAME", help="default: $STREAM or demo"
    )
    parser.add_argument(
        "--from",
        dest="start",
        choices=["earliest", "latest"],
        default="latest",
        help="where to start when there is no cursor yet (a cursor always wins)",
    )
    parser.add_argument("--key", action="append", default=[], help="only events with this key (repeatable)")
    parser.add_argument("--type", action="append", default=[], help="only events of this type (repeatable)")
    parser.add_argument("--max-events", type=int, metavar="N", help="exit after printing this many events")
    parser.add_argument("--cursor-file", metavar="PATH", help="keep the cursor in this file: read at start, rewritten as events print")
    args = parser.parse_args()
    if not args.gateways:
        args.gateways = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080").split(",")
    try:
        Consumer(args).run()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
