#!/usr/bin/env python3
"""A Sluice polling client: reads one or several streams as JSON pages, never losing or repeating
an event across pages, gateways and restarts. Python 3 standard library only: copy the file.

Polling suits programs that cannot hold a connection open (cron jobs, serverless functions,
networks whose proxies buffer responses); sluice_consumer.py, which holds an SSE stream open, is
the lower-latency choice otherwise. Each request is

    GET <gateway>/v1/streams/<a>,<b>/poll?cursor=<cursor>&wait=<seconds>&limit=<n>

and answers as soon as there are events (or after `wait` seconds with none) with a page
{"events": [...], "cursor": "..."}. The page's cursor is the position after its last event in
every partition of every stream; sending it back, to *any* gateway, gets exactly the events after
it. It is the same cursor an SSE stream of these streams sends as `id:`. So this program:

- prints each event as one JSON line on stdout, the gateway's own object
  {"id","stream","type","data","key","partition","offset","timestamp"}, and warnings on stderr
  (a "gap" in a page says events were lost to Kafka's retention);
- asks for the next page with the page's cursor; with `--cursor-file`, saves it after printing
  the page, so a restart resumes where it stopped;
- stays on one `--gateway` while it answers, and moves to the next one when a connection fails
  (refused, reset, timed out) or a gateway turns it away (429, 503, another 5xx);
- waits what `Retry-After` says on 429 and 503, and backs off while no gateway answers.

    python3 sluice_poller.py --streams orders,payments --from earliest --cursor-file orders.cursor
"""

import argparse
import http.client
import json
import os
import random
import sys
import time
import urllib.parse


class Retry(Exception):
    """No page this time; try again after `wait` seconds (None: back off), maybe elsewhere."""

    def __init__(self, reason, wait=None):
        super().__init__(reason)
        self.wait = wait


class Poller:
    def __init__(self, args):
        self.args = args
        self.cursor = load_cursor(args.cursor_file) if args.cursor_file else None
        self.saved = self.cursor
        self.printed = 0

    def run(self):
        if self.args.max_events == 0:
            return
        gateway, failures_in_a_row = 0, 0
        while True:
            url = self.args.gateways[gateway % len(self.args.gateways)]
            try:
                page = self.fetch(url)
            except Retry as retry:
                reason, wait = str(retry), retry.wait
            except (OSError, http.client.HTTPException, ValueError) as error:
                # Refused, reset, timed out, or a reply that is not a page (a proxy's error page).
                reason, wait = f"no page: {error!r}", None
            else:
                failures_in_a_row = 0
                if self.take(page):
                    return
                continue
            # The next request goes to the next gateway. While none answers, back off:
            # 1, 2, 4 … 30 s, jittered so that the clients of a dead gateway do not return at once.
            gateway += 1
            failures_in_a_row += 1
            if wait is None:
                wait = min(2 ** (failures_in_a_row - 1), 30) * random.uniform(0.5, 1.5)
            warn(f"{url}: {reason}; next request in {wait:.2f}s")
            time.sleep(wait)

    def fetch(self, gateway):
        """One poll request; the page, or `Retry`. A 4xx other than 429 ends the program."""
        url = urllib.parse.urlsplit(gateway.rstrip("/"))
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        # The gateway answers within `wait` (plus a moment while it reads Kafka): a request
        # much slower than that has lost its gateway.
        connection = connection_class(url.netloc, timeout=self.args.wait + 30)
        query = [("wait", f"{self.args.wait:.3f}"), ("limit", self.args.limit)]
        query.append(("cursor", self.cursor) if self.cursor else ("from", self.args.start))
        query += [("key", key) for key in self.args.key]
        query += [("type", event_type) for event_type in self.args.type]
        streams = urllib.parse.quote(self.args.streams, safe=",")
        path = f"{url.path}/v1/streams/{streams}/poll?{urllib.parse.urlencode(query)}"
        headers = {"Accept": "application/json"}
        token = access_token(self.args)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status == 200:
            return json.loads(body)
        text = body.decode(errors="replace")
        if response.status in (429, 503):
            # Too many connections, draining, Kafka unavailable: the gateway says when to return.
            retry_after = response.getheader("Retry-After", "")
            raise Retry(f"{response.status} {text}", int(retry_after) if retry_after.isdigit() else None)
        if 400 <= response.status < 500:
            # A bad cursor or query, an unknown stream, a refused token: retrying will not help.
            sys.exit(f"sluice_poller: {gateway}: {response.status} {text}")
        raise Retry(f"{response.status} {text}")

    def take(self, page):
        """Prints a page and saves its cursor. True when --max-events are printed."""
        for gap in page.get("gap", []):
            warn_gap(gap)
        for event in page["events"]:
            print(json.dumps(event, ensure_ascii=False, separators=(",", ":")), flush=True)
            self.printed += 1
            if self.printed == self.args.max_events:
                # Each event's id is the cursor after it: stopping mid-page loses nothing.
                self.cursor = event["id"]
                self.save_cursor()
                return True
        # The page's cursor, not the last event's id: it also moves past events the filters skip.
        self.cursor = page["cursor"]
        # Saved after printing: a crash in between repeats a page on restart, never loses one.
        self.save_cursor()
        return False

    def save_cursor(self):
        """Write the cursor file if the cursor moved: a temporary file renamed over the old one,
        so a crash never leaves half a cursor."""
        if not self.args.cursor_file or not self.cursor or self.cursor == self.saved:
            return
        temporary = self.args.cursor_file + ".tmp"
        with open(temporary, "w", encoding="ascii") as file:
            file.write(self.cursor + "\n")
        os.replace(temporary, self.args.cursor_file)
        self.saved = self.cursor


def load_cursor(path):
    """The cursor saved by an earlier run; None when the file does not exist yet."""
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip() or None
    except FileNotFoundError:
        return None


def access_token(args):
    """The token to send, read anew for every request: whatever refreshes the file (a sidecar,
    a cron job) is picked up without a restart."""
    if args.token_file:
        with open(args.token_file, encoding="ascii") as file:
            return file.read().strip() or None
    return os.environ.get("ACCESS_TOKEN") or None


def warn(message):
    print(f"sluice_poller: {message}", file=sys.stderr, flush=True)


def warn_gap(gap):
    """A page's "gap": its cursor pointed at events Kafka no longer holds (or past a partition's
    end); the page goes on from the oldest event Kafka has. It says what was lost, per partition."""
    try:
        lost = ", ".join(
            f"partition {p['partition']}: offsets {p['from']} to {p['to'] - 1}" for p in gap["partitions"]
        )
        warn(f"warning: {gap['stream']}: events were lost ({gap['reason']}): {lost}")
    except (KeyError, TypeError):
        warn(f"warning: events were lost: {json.dumps(gap)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gateway",
        dest="gateways",
        action="append",
        metavar="URL",
        help="a gateway's base URL; repeat it to move to the next gateway when one fails "
        "(default: $GATEWAY_URL, comma-separated, or http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--streams",
        "--stream",
        default=os.environ.get("STREAMS", os.environ.get("STREAM", "demo")),
        metavar="A,B",
        help="the streams, comma-separated; --stream is the same flag, as in sluice_consumer.py "
        "(default: $STREAMS, $STREAM or demo)",
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
    parser.add_argument(
        "--wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long a request waits for an event when there is none (default 20; the gateway caps it)",
    )
    parser.add_argument("--limit", type=int, default=100, metavar="N", help="events per page at most (default 100)")
    parser.add_argument("--max-events", type=int, metavar="N", help="exit after printing this many events")
    parser.add_argument("--cursor-file", metavar="PATH", help="keep the cursor in this file: read at start, rewritten after each page")
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file holding the access token, read for every request (default: $ACCESS_TOKEN; none)",
    )
    args = parser.parse_args()
    if not args.gateways:
        args.gateways = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080").split(",")
    try:
        Poller(args).run()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
