#!/usr/bin/env python3
"""Publish events to a Sluice stream through the ingest service. Python 3 standard library only.

    python3 publish.py '{"hello":"world"}'                       # one event to stream "demo"
    python3 publish.py --stream orders --key user-1 --type created '{"id":1}' '{"id":2}'

Each argument is one event's data, as JSON; they are sent as one batch (a JSON array), which
ingest writes all or nothing. The answer comes only after Kafka acknowledged every event, and
lists each event's partition and offset, in order. Events with one --key go to one partition,
so readers see them in the order given. On an error the JSON error is printed and the exit code
is 1; a 503 (Kafka busy) says when to retry in its Retry-After header.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="an event's data: any JSON value")
    parser.add_argument(
        "--ingest",
        default=os.environ.get("INGEST_URL", "http://127.0.0.1:8090"),
        help="ingest's base URL (default: $INGEST_URL or http://127.0.0.1:8090)",
    )
    parser.add_argument("--stream", default=os.environ.get("STREAM", "demo"), help="default: $STREAM or demo")
    parser.add_argument("--key", help="the Kafka key of every event")
    parser.add_argument("--type", help="the SSE event type of every event (default: message)")
    args = parser.parse_args()

    events = []
    for data in args.data:
        event = {"data": json.loads(data)}
        if args.key:
            event["key"] = args.key
        if args.type:
            event["type"] = args.type
        events.append(event)
    url = f"{args.ingest.rstrip('/')}/v1/streams/{urllib.parse.quote(args.stream)}/events"
    request = urllib.request.Request(
        url,
        data=json.dumps(events).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
    except urllib.error.HTTPError as error:
        # Errors have a JSON body: {"error":{"code":"…","message":"…"}}.
        print(error.read().decode(errors="replace"), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
