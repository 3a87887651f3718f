#!/bin/sh
# Apply the replicated-cluster DDL (the *.sql files next to this script) with clickhouse-client.
#
#   CLUSTER=prod ./deploy/clickhouse/replicated/apply.sh --host ch-1 --user admin --password ...
#
# Variables (defaults in brackets): CLUSTER (required, a cluster of remote_servers),
# DB [journeystream], EVENTS_TTL_DAYS [90], FACTS_TTL_DAYS [730] - keep them equal to the
# workers' JOURNEYSTREAM_CLICKHOUSE_DATABASE / _EVENTS_TTL_DAYS / _FACTS_TTL_DAYS.
# Extra arguments go to clickhouse-client. Idempotent (CREATE ... IF NOT EXISTS).
set -eu
: "${CLUSTER:?set CLUSTER to the ClickHouse cluster name (system.clusters)}"
DB="${DB:-journeystream}"
EVENTS_TTL_DAYS="${EVENTS_TTL_DAYS:-90}"
FACTS_TTL_DAYS="${FACTS_TTL_DAYS:-730}"
here="$(cd "$(dirname "$0")" && pwd)"

clickhouse-client "$@" --query "CREATE DATABASE IF NOT EXISTS ${DB} ON CLUSTER '${CLUSTER}'"
for file in "$here"/*.sql; do
    echo "applying $(basename "$file")"
    sed -e "s/\${db}/${DB}/g" \
        -e "s/\${cluster}/${CLUSTER}/g" \
        -e "s/\${events_ttl_days}/${EVENTS_TTL_DAYS}/g" \
        -e "s/\${facts_ttl_days}/${FACTS_TTL_DAYS}/g" \
        "$file" | clickhouse-client "$@" --multiquery
done
