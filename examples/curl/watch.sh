#!/usr/bin/env bash
# Watch a Sluice stream with curl: from the oldest event Kafka holds, or resume after an event.
#
#   examples/curl/watch.sh                    # every event, then new ones as they arrive (Ctrl-C stops)
#   examples/curl/watch.sh 'ATY1_a4EAAEBAAA'  # resume: exactly the events after the one with this id
#   GATEWAY_URL=http://127.0.0.1:8081 STREAM=orders examples/curl/watch.sh
#
# What you see is the raw SSE stream. First `retry: <ms>`, the delay a client should wait before
# reconnecting. Then one frame per event:
#
#   id: ATY1_a4EAAEBAAA     <- the cursor: the position after this event, in every partition
#   event: count            <- the event's type (no line for the default type, `message`)
#   data: 2                 <- the event's data
#
# and a `:` comment line now and then (a heartbeat: it keeps proxies from closing a quiet stream).
# Once the events that were already there when the stream opened have all been sent, one
# `event: sluice.caught-up` frame says so (its id is the position): what follows is live.
# Any id resumes the stream, on any gateway, with no event lost and none repeated.
set -euo pipefail

GATEWAY_URL="${GATEWAY_URL:-http://127.0.0.1:8080}"
STREAM="${STREAM:-demo}"

# --no-buffer (-N): print each frame as it arrives instead of waiting for curl's buffer to fill.
# --fail-with-body: a 400 (bad cursor) or 404 (no such stream) exits non-zero, printing the error.
args=(--no-buffer --silent --show-error --fail-with-body -H 'Accept: text/event-stream')
if [[ $# -gt 0 ]]; then
  # What a browser's EventSource sends by itself when it reconnects. Clients that cannot set
  # headers pass the same id as `?lastEventId=…`.
  args+=(-H "Last-Event-ID: $1")
fi

# from=earliest: without a cursor, start at the oldest event (the default, latest, shows only new
# events). A cursor always wins over it. `exec` so Ctrl-C and kill reach curl itself.
exec curl "${args[@]}" "$GATEWAY_URL/v1/streams/$STREAM?from=earliest"
