#!/usr/bin/env bash
# Publish events to a Sluice stream through the ingest service, three ways: one event, a batch
# (a JSON array) and NDJSON (one event per line).
#
#   examples/curl/publish.sh                                   # `make run`'s ingest, stream "demo"
#   STREAM=orders INGEST_URL=http://ingest.example:8090 examples/curl/publish.sh
#
# Each request answers 200 only after Kafka acknowledged every one of its events, with one
# {"partition","offset","timestamp"} per event, in request order. A request is all or nothing:
# if any event is invalid, none is written.
set -euo pipefail

INGEST_URL="${INGEST_URL:-http://127.0.0.1:8090}"
STREAM="${STREAM:-demo}"
url="$INGEST_URL/v1/streams/$STREAM/events"

# --fail-with-body: an HTTP error (400, 404, 413, 415, 503) makes curl exit non-zero, so `set -e`
# stops the script, and still prints the JSON error body saying what was wrong.
post=(curl --silent --show-error --fail-with-body -X POST "$url")

# One event. `data` is any JSON value. `type` (optional) becomes the SSE `event:` line. `key`
# (optional) is the Kafka record key: events with one key go to one partition, so readers see
# them in the order they were published.
"${post[@]}" -H 'Content-Type: application/json' \
  -d '{"type":"greeting","key":"user-1","data":{"hello":"world"}}'
echo

# A batch: a JSON array. Events without a type are SSE's default type, `message`.
"${post[@]}" -H 'Content-Type: application/json' \
  -d '[{"key":"user-1","data":1},{"key":"user-1","type":"count","data":2}]'
echo

# NDJSON: one event per line, handy for piping from other tools. Note the content type: without
# one, `curl -d` sends a form, which ingest refuses with 415.
printf '%s\n' '{"key":"user-1","data":"a"}' '{"key":"user-1","type":"note","data":{"text":"b"}}' |
  "${post[@]}" -H 'Content-Type: application/x-ndjson' --data-binary @-
echo
