#!/bin/bash
# One-shot topic initialiser of the compose stack (service kafka-init in docker-compose.yml).
# Runs in the apache/kafka image, with its own kafka-topics.sh, once the broker is healthy.
# Sluice never creates topics (README, Running against a real Kafka), and the stack's broker
# does not auto-create them, so a stream exists once its topic is created here.
#
# TOPICS: space-separated name:partitions, e.g. "demo:3 ticker:1".
# BOOTSTRAP: the broker's address on the compose network.
set -euo pipefail
: "${TOPICS:?set TOPICS, e.g. \"demo:3 ticker:1\"}"
: "${BOOTSTRAP:?set BOOTSTRAP, e.g. kafka:19092}"
KAFKA_TOPICS=/opt/kafka/bin/kafka-topics.sh

for spec in $TOPICS; do
  name=${spec%%:*}
  partitions=${spec##*:}
  if [[ $name == "$spec" || ! $partitions =~ ^[1-9][0-9]*$ ]]; then
    echo "create-topics: bad entry '$spec' in TOPICS: want name:partitions" >&2
    exit 64
  fi
  # --if-not-exists: re-running the stack (docker compose up again) is not an error.
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1
done
echo "create-topics: topics on $BOOTSTRAP:"
"$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --list
