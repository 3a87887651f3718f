#!/usr/bin/env bash
# A real single-node Apache Kafka 4 broker (KRaft) on 127.0.0.1, for tests, the demo and CI.
#
#   deploy/kafka/broker.sh fetch    resolve the broker jars with Maven (once; cached)
#   deploy/kafka/broker.sh start    format storage if new, start, wait until it serves
#   deploy/kafka/broker.sh stop     stop the broker started from this folder (by PID)
#   deploy/kafka/broker.sh status   running or not
#
# Environment: KAFKA_PORT (default 9092; the controller listens on KAFKA_PORT+1),
# KAFKA_STATE_DIR (default .local/kafka-$KAFKA_PORT: data, logs, pid),
# KAFKA_LIBS_DIR (default .local/kafka/libs), KAFKA_HEAP (default 512m),
# KAFKA_START_TIMEOUT (seconds, default 90).
#
# Secured mode: KAFKA_SASL_SSL_DIR names a folder (deploy/kafka/dev-secrets.sh makes one)
#   broker-keystore.pem  the broker's unencrypted PKCS#8 key and certificate chain (PEM)
#   ca.pem               the CA the broker trusts for its own (inter-broker) connections
#   users                "name password" per line: SCRAM-SHA-256 and SCRAM-SHA-512
#                        credentials created at format time by Kafka's storage tool; the
#                        first user is the broker's own inter-broker identity
# and the client listener on 127.0.0.1:$KAFKA_PORT is SASL_SSL (SCRAM-SHA-256/512) instead of
# PLAINTEXT. The controller listener stays PLAINTEXT on 127.0.0.1. Users are only created when
# the storage is formatted: start from a fresh KAFKA_STATE_DIR to change them.
# KAFKA_SSL_CLIENT_AUTH=required (default none) also asks every client for a certificate
# signed by ca.pem (mutual TLS on top of SASL).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${KAFKA_PORT:-9092}"
controller_port="$((port + 1))"
state="${KAFKA_STATE_DIR:-$root/.local/kafka-$port}"
libs="${KAFKA_LIBS_DIR:-$root/.local/kafka/libs}"
heap="${KAFKA_HEAP:-512m}"
secured="${KAFKA_SASL_SSL_DIR:-}"
client_auth="${KAFKA_SSL_CLIENT_AUTH:-none}"
timeout="${KAFKA_START_TIMEOUT:-90}"
pidfile="$state/broker.pid"

fetch() {
  if [ -f "$libs/.complete" ] && [ "$libs/.complete" -nt "$here/pom.xml" ]; then
    return 0
  fi
  echo "resolving Kafka broker jars with Maven into $libs ..." >&2
  rm -rf "$libs"
  mkdir -p "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime >&2
  touch "$libs/.complete"
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

client_listener() {
  if [ -n "$secured" ]; then echo SASL_SSL; else echo PLAINTEXT; fi
}

check_secured_dir() {
  local file
  case "$client_auth" in
    none|requested|required) ;;
    *) echo "KAFKA_SSL_CLIENT_AUTH=$client_auth: expected none, requested or required" >&2; exit 2 ;;
  esac
  for file in broker-keystore.pem ca.pem users; do
    if [ ! -r "$secured/$file" ]; then
      echo "KAFKA_SASL_SSL_DIR=$secured: $file is missing or unreadable" >&2
      exit 2
    fi
  done
  if ! grep -qE '^[^[:space:]]+[[:space:]]+[^[:space:]]+' "$secured/users"; then
    echo "KAFKA_SASL_SSL_DIR=$secured: users has no 'name password' line" >&2
    exit 2
  fi
}

# The SASL_SSL listener: TLS with the folder's keystore, SCRAM logins, the first user as the
# broker's own identity on the inter-broker listener.
secured_config() {
  local admin admin_password
  read -r admin admin_password < <(grep -E '^[^[:space:]]' "$secured/users" | head -n 1)
  cat <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$admin" password="$admin_password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$admin" password="$admin_password";
ssl.keystore.type=PEM
ssl.keystore.location=$secured/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$secured/ca.pem
listener.name.sasl_ssl.ssl.client.auth=$client_auth
ssl.endpoint.identification.algorithm=https
PROPS
}

# --add-scram arguments of the storage tool: both mechanisms for every user of the folder.
scram_arguments() {
  local name password mechanism
  while read -r name password; do
    [ -n "$name" ] && [ -n "$password" ] || continue
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
      printf '%s\0%s\0' --add-scram "$mechanism=[name=$name,password=$password]"
    done
  done < "$secured/users"
}

write_config() {
  mkdir -p "$state/data" "$state/logs"
  local listener; listener="$(client_listener)"
  umask 077  # the secured config holds the broker's SCRAM login
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listener://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listener://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$listener:$listener
inter.broker.listener.name=$listener
log.dirs=$state/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
log.segment.bytes=104857600
PROPS
  if [ -n "$secured" ]; then
    secured_config >> "$state/server.properties"
  fi
}

java_args() {
  jvm=(java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true
    "-Dkafka.logs.dir=$state/logs" "-Dlog4j2.configurationFile=$here/log4j2.properties"
    -cp "$libs/*")
}

java_cmd() {
  java_args
  "${jvm[@]}" "$@"
}

start() {
  fetch
  if running; then
    echo "broker already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
    return 0
  fi
  local began; began=$(date +%s%N)
  local scram=()
  if [ -n "$secured" ]; then
    check_secured_dir
    mapfile -d '' scram < <(scram_arguments)
  fi
  write_config
  if [ ! -f "$state/data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format --ignore-formatted \
      -t "$(java_cmd kafka.tools.StorageTool random-uuid)" -c "$state/server.properties" \
      "${scram[@]}" > "$state/logs/format.log"
  fi
  : > "$state/logs/server.log"
  java_args
  nohup "${jvm[@]}" kafka.Kafka "$state/server.properties" > "$state/logs/stdout.log" 2>&1 &
  echo $! > "$pidfile"
  local deadline=$((SECONDS + timeout))
  until grep -q "Kafka Server started" "$state/logs/server.log" 2>/dev/null; do
    if ! running; then
      echo "broker exited during start; see $state/logs/" >&2
      tail -n 20 "$state/logs/stdout.log" "$state/logs/server.log" >&2 || true
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "broker not ready after ${timeout}s; see $state/logs/" >&2
      stop
      exit 1
    fi
    sleep 0.2
  done
  local ms=$(( ($(date +%s%N) - began) / 1000000 ))
  echo "broker ready on 127.0.0.1:$port ($(client_listener)) in ${ms} ms (pid $(cat "$pidfile"))"
}

stop() {
  if ! running; then
    rm -f "$pidfile"
    echo "broker on port $port not running"
    return 0
  fi
  local pid; pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "broker $pid did not stop in 30s; killing it" >&2
    kill -KILL "$pid" || true
  fi
  rm -f "$pidfile"
  echo "broker on port $port stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$pidfile"))"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
