#!/usr/bin/env bash
# A real Apache Kafka 4.x broker (KRaft, single node) on loopback, for the
# test tier that runs the Kafka-facing tests against it instead of the
# embedded broker.
#
#   scripts/kafka.sh install   fetch the broker and its dependencies from Maven Central (cached)
#   scripts/kafka.sh start     format a KRaft log dir (first time) and start the broker
#   scripts/kafka.sh stop      stop it
#   scripts/kafka.sh status    exit 0 when it answers
#
# Environment:
#   TANDEM_KAFKA_VERSION  broker version (default 4.1.1; runs on Java 17)
#   TANDEM_KAFKA_DIR      log dir, config, pidfile and logs (default .tandem/apache-kafka)
#   TANDEM_KAFKA_PORT     client port (default 19092); the controller uses port+1
#   TANDEM_CACHE          download cache (default $HOME/.cache/tandem)
#   TANDEM_KAFKA_SASL_SSL_PORT  also open a SASL_SSL listener here (PLAIN,
#                         SCRAM-SHA-256, SCRAM-SHA-512), with a CA and server
#                         certificate made by openssl into $TANDEM_KAFKA_DIR/tls
#                         (ca.crt is the CA clients trust) and one user,
#                         $TANDEM_KAFKA_SASL_USER (default tandem) with
#                         $TANDEM_KAFKA_SASL_PASSWORD, known to all three
#                         mechanisms (SCRAM credentials are written when the
#                         log dir is formatted: kafka-storage format --add-scram)
set -euo pipefail

VERSION="${TANDEM_KAFKA_VERSION:-4.1.1}"
CACHE="${TANDEM_CACHE:-${HOME:-/root}/.cache/tandem}"
LIBS="$CACHE/apache-kafka-$VERSION/libs"
DIR="${TANDEM_KAFKA_DIR:-.tandem/apache-kafka}"
PORT="${TANDEM_KAFKA_PORT:-19092}"
CONTROLLER_PORT=$((PORT + 1))
SASL_SSL_PORT="${TANDEM_KAFKA_SASL_SSL_PORT:-}"
SASL_USER="${TANDEM_KAFKA_SASL_USER:-tandem}"
SASL_PASSWORD="${TANDEM_KAFKA_SASL_PASSWORD:-}"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

need_java() {
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    log "installing Java 17 and Maven from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  fi
}

cmd_install() {
  if [ -f "$LIBS/.complete" ]; then
    log "Apache Kafka $VERSION already in $LIBS"
    return 0
  fi
  need_java
  local work
  work="$(mktemp -d)"
  # A throwaway POM whose only job is to resolve the broker's runtime
  # classpath; Maven's dependency plugin copies it into the cache.
  cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tandem</groupId><artifactId>apache-kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
  log "fetching Apache Kafka $VERSION and its dependencies from Maven Central"
  mkdir -p "$LIBS"
  (cd "$work" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS") \
    || die "could not fetch Apache Kafka $VERSION from Maven Central"
  rm -rf "$work"
  touch "$LIBS/.complete"
  log "installed into $LIBS"
}

kafka_java() {
  java -Xms256m -Xmx768m -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
    -Dkafka.logs.dir="$DIR/logs" -cp "$LIBS/*" "$@"
}

answering() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# make_certs writes a CA and a server certificate for the loopback
# addresses into $DIR/tls: ca.crt for clients, server.pem (PKCS#8 key, then
# the certificate) for the broker's PEM keystore.
make_certs() {
  local t="$DIR/tls"
  [ -f "$t/server.pem" ] && return 0
  command -v openssl >/dev/null || die "TANDEM_KAFKA_SASL_SSL_PORT needs openssl to make the test certificates"
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tandem test Kafka CA" \
    -keyout "$t/ca.key" -out "$t/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$t/ext.cnf"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -days 2 \
    -extfile "$t/ext.cnf" -out "$t/server.crt" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$t/server.key" -out "$t/server.pk8"
  cat "$t/server.pk8" "$t/server.crt" >"$t/server.pem"
  chmod 600 "$t"/*.key "$t/server.pk8" "$t/server.pem"
}

cmd_start() {
  cmd_install
  mkdir -p "$DIR/logs"
  DIR="$(cd "$DIR" && pwd)"
  local listeners="PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  local advertised="PLAINTEXT://127.0.0.1:$PORT"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  local sasl_props="" scram_args=()
  if [ -n "$SASL_SSL_PORT" ]; then
    [ -n "$SASL_PASSWORD" ] || die "TANDEM_KAFKA_SASL_SSL_PORT needs TANDEM_KAFKA_SASL_PASSWORD"
    [[ "$SASL_USER$SASL_PASSWORD" =~ ^[A-Za-z0-9_-]+$ ]] || die "TANDEM_KAFKA_SASL_USER/PASSWORD: use letters, digits, - and _ only (they go into the JAAS line and --add-scram)"
    make_certs
    listeners="$listeners,SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    advertised="$advertised,SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    protocols="$protocols,SASL_SSL:SASL_SSL"
    sasl_props="sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER=\"$SASL_PASSWORD\";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$DIR/tls/server.pem"
    scram_args=(--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]"
      --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]")
  fi
  if [ -f "$DIR/kafka.pid" ] && kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null && answering; then
    log "already running at 127.0.0.1:$PORT (pid $(cat "$DIR/kafka.pid"))"
    return 0
  fi
  cat >"$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
$sasl_props
PROPS
  cat >"$DIR/log4j2.properties" <<LOG
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $DIR/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
LOG
  if [ ! -f "$DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$DIR/server.properties" "${scram_args[@]}" \
      >"$DIR/logs/format.log" 2>&1 || die "formatting the KRaft log dir failed: see $DIR/logs/format.log"
  fi
  setsid bash -c "exec java -Xms256m -Xmx768m -Dlog4j2.configurationFile='$DIR/log4j2.properties' \
    -cp '$LIBS/*' kafka.Kafka '$DIR/server.properties'" >"$DIR/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$DIR/kafka.pid"
  for _ in $(seq 1 120); do
    if answering; then
      log "Apache Kafka $VERSION listening on 127.0.0.1:$PORT${SASL_SSL_PORT:+, SASL_SSL on 127.0.0.1:$SASL_SSL_PORT (CA $DIR/tls/ca.crt)} (data $DIR/data)"
      return 0
    fi
    kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null || die "broker exited: see $DIR/logs/stdout.log"
    sleep 0.5
  done
  die "broker did not answer within 60 s: see $DIR/logs"
}

cmd_stop() {
  [ -f "$DIR/kafka.pid" ] || { log "not running"; return 0; }
  local pid
  pid="$(cat "$DIR/kafka.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/kafka.pid"; log "stopped"; return 0; }
    sleep 0.5
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$DIR/kafka.pid"
  log "killed"
}

cmd_status() {
  answering && { log "answering on 127.0.0.1:$PORT"; return 0; }
  log "not answering on 127.0.0.1:$PORT"; return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
