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
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
port="${KAFKA_PORT:-9092}"
controller_port="$((port + 1))"
state="${KAFKA_STATE_DIR:-$root/.local/kafka-$port}"
libs="${KAFKA_LIBS_DIR:-$root/.local/kafka/libs}"
heap="${KAFKA_HEAP:-512m}"
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

write_config() {
  mkdir -p "$state/data" "$state/logs"
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
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
  write_config
  if [ ! -f "$state/data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format --ignore-formatted \
      -t "$(java_cmd kafka.tools.StorageTool random-uuid)" -c "$state/server.properties" > "$state/logs/format.log"
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
  echo "broker ready on 127.0.0.1:$port in ${ms} ms (pid $(cat "$pidfile"))"
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
