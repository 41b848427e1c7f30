#!/usr/bin/env bash
# Poll Sluice streams with curl: JSON pages instead of a stream held open, for places where a
# connection cannot stay up (cron jobs, serverless functions, proxies that buffer).
#
#   examples/curl/poll.sh http://127.0.0.1:8080 orders,payments          # from the oldest event, forever
#   examples/curl/poll.sh http://127.0.0.1:8081 orders,payments 'AgIC…'  # resume after that cursor
#   CURSOR_FILE=orders.cursor examples/curl/poll.sh http://127.0.0.1:8080 orders   # resume across runs
#
# Each request is `GET <gateway>/v1/streams/<streams>/poll?cursor=…&wait=…&limit=…`. It answers as
# soon as there are events (at most `limit`), or after `wait` seconds with none, with a page
# {"events":[…],"cursor":"…"}. The page's cursor is the position after its last event: the next
# request sends it and gets exactly the events after it, on any gateway, none lost or repeated.
# It is the same cursor an SSE stream of these streams sends as `id:`, so either continues the
# other (watch.sh with STREAM=orders,payments and this cursor).
#
# Prints one line per event on stdout: stream, type and data, separated by tabs (line breaks in
# data, which only producers other than ingest can write, are printed as \r and \n), e.g.
#
#   orders	created	{"n":1}
#
# and on stderr the cursor after each page that moved it (`cursor: …`), events lost to Kafka's
# retention (`gap: …`), and retries.
#
# Environment (all optional):
#   WAIT=20          seconds a request waits for an event when there is none (the gateway caps it)
#   LIMIT=100        events per page at most
#   FROM=earliest    where to start without a cursor: earliest or latest (a cursor always wins)
#   CURSOR_FILE=…    read the cursor from this file when none is given; rewritten after each page
#   PAGES=N          stop after N pages (default: poll forever)
#   ACCESS_TOKEN=…   sent as `Authorization: Bearer …`, never on the command line
#
# A 429 or 503 (too many connections, draining, Kafka unavailable) waits the `Retry-After` it
# carries and tries again; so does a failed connection, backing off. Any other 4xx (a bad cursor,
# an unknown stream, a refused token) prints the JSON error on stderr and exits 1: retrying would
# not help.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 <gateway-url> <stream>[,<stream>…] [cursor]" >&2
  exit 2
fi
gateway="${1%/}"
streams="$2"
cursor="${3:-}"
if [[ -z "$cursor" && -n "${CURSOR_FILE:-}" && -s "$CURSOR_FILE" ]]; then
  cursor="$(<"$CURSOR_FILE")"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -n "${ACCESS_TOKEN:-}" ]]; then
  # From a file (in a directory only we can read), so the token is not among curl's arguments,
  # which anyone on the machine can see with `ps`.
  printf 'Authorization: Bearer %s\n' "$ACCESS_TOKEN" >"$work/authorization"
fi

# Reads a page on stdin; prints its events, gaps (on stderr), and last the page's cursor.
# python3 because bash cannot parse JSON; only the standard library.
print_page='
import json, sys
page = json.load(sys.stdin)
for gap in page.get("gap", []):
    print("poll.sh: gap: events lost to Kafka retention or a reset:", json.dumps(gap), file=sys.stderr)
for event in page["events"]:
    data = event["data"].replace("\r", "\\r").replace("\n", "\\n")
    print(event["stream"], event["type"], data, sep="\t")
print(page["cursor"])
'

# The value of the Retry-After header in the headers curl saved, if it is a number of seconds.
retry_after() {
  local value
  value="$(tr -d '\r' <"$work/headers" | awk -F': *' 'tolower($1) == "retry-after" { print $2 }' | tail -n 1)"
  [[ "$value" =~ ^[0-9]+$ ]] && echo "$value"
}

wait="${WAIT:-20}"
pages=0
failures=0
while [[ -z "${PAGES:-}" || $pages -lt $PAGES ]]; do
  args=(--silent --show-error --get --output "$work/body" --dump-header "$work/headers"
    --write-out '%{http_code}' --max-time "$(( ${wait%%.*} + 30 ))"
    --data-urlencode "wait=$wait" --data-urlencode "limit=${LIMIT:-100}")
  if [[ -n "$cursor" ]]; then
    args+=(--data-urlencode "cursor=$cursor")
  else
    args+=(--data-urlencode "from=${FROM:-earliest}")
  fi
  if [[ -n "${ACCESS_TOKEN:-}" ]]; then
    args+=(--header "@$work/authorization")
  fi
  status="$(curl "${args[@]}" "$gateway/v1/streams/$streams/poll")" || status=000

  case "$status" in
  200)
    failures=0
    page="$(python3 -c "$print_page" <"$work/body")"
    next="${page##*$'\n'}"
    if [[ "$page" == *$'\n'* ]]; then
      printf '%s\n' "${page%$'\n'*}"
    fi
    if [[ "$next" != "$cursor" ]]; then
      cursor="$next"
      echo "poll.sh: cursor: $cursor" >&2
      if [[ -n "${CURSOR_FILE:-}" ]]; then
        # Written after the events are printed, and renamed over the old file, so a crash
        # repeats a page at worst and never leaves half a cursor.
        printf '%s\n' "$cursor" >"$CURSOR_FILE.tmp"
        mv "$CURSOR_FILE.tmp" "$CURSOR_FILE"
      fi
    fi
    pages=$((pages + 1))
    ;;
  429 | 503)
    delay="$(retry_after || echo 5)"
    echo "poll.sh: $status $(<"$work/body"); retrying in ${delay}s" >&2
    sleep "$delay"
    ;;
  4??)
    echo "poll.sh: $status $(<"$work/body")" >&2
    exit 1
    ;;
  *)
    # No answer (000: refused, reset, timed out) or a 5xx without Retry-After: back off 1, 2,
    # 4 … 32 s while it lasts.
    delay=$((1 << (failures < 5 ? failures : 5)))
    failures=$((failures + 1))
    echo "poll.sh: no page (HTTP $status); retrying in ${delay}s" >&2
    sleep "$delay"
    ;;
  esac
done
