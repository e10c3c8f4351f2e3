# shellcheck shell=bash
# Common settings for deploy/local/{up,down,kafka-topics}. Sourced, not executed.
# Every value can be overridden from the environment.

SOCIALCRM_ROOT="${SOCIALCRM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
LOCAL_DIR="${SOCIALCRM_LOCAL_DIR:-$SOCIALCRM_ROOT/.local}"
CACHE_DIR="${SOCIALCRM_CACHE_DIR:-$SOCIALCRM_ROOT/.cache}"

# --- ClickHouse ---------------------------------------------------------------
CLICKHOUSE_HOST="${CLICKHOUSE_HOST:-127.0.0.1}"
CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CLICKHOUSE_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
CLICKHOUSE_DATA_DIR="${CLICKHOUSE_DATA_DIR:-$LOCAL_DIR/clickhouse}"
CLICKHOUSE_SECURE_USER="${CLICKHOUSE_SECURE_USER:-crm_secure}"
CLICKHOUSE_SECURE_PASSWORD="${CLICKHOUSE_SECURE_PASSWORD:-crm-secure-pass}"
CLICKHOUSE_START_TIMEOUT="${CLICKHOUSE_START_TIMEOUT:-60}"

# --- Kafka --------------------------------------------------------------------
KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$LOCAL_DIR/kafka}"
KAFKA_LIBS_DIR="${KAFKA_LIBS_DIR:-$CACHE_DIR/kafka/libs}"
KAFKA_M2_REPO="${KAFKA_M2_REPO:-$CACHE_DIR/m2}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_POM="$SOCIALCRM_ROOT/deploy/local/kafka/pom.xml"
KAFKA_BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
# Authenticated listeners next to the PLAINTEXT one (which everything else uses):
# SASL_PLAINTEXT and SASL_SSL (TLS with a CA made here, in $KAFKA_DATA_DIR/tls), both
# SCRAM-SHA-256, for the user $KAFKA_SASL_USER (tests/e2e_security.rs, docs/security.md)
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-9094}"
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-9095}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-crm_sasl}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-crm-sasl-pass}"
KAFKA_TLS_DIR="${KAFKA_TLS_DIR:-$KAFKA_DATA_DIR/tls}"

# --- Topics -------------------------------------------------------------------
SOCIALCRM_TOPIC_EVENTS="${SOCIALCRM_TOPIC_EVENTS:-crm.events}"
SOCIALCRM_TOPIC_DLQ="${SOCIALCRM_TOPIC_DLQ:-crm.dlq}"
SOCIALCRM_TOPIC_IDENTITY="${SOCIALCRM_TOPIC_IDENTITY:-crm.identity}"
SOCIALCRM_TOPIC_PROFILES="${SOCIALCRM_TOPIC_PROFILES:-crm.profiles}"
SOCIALCRM_TOPIC_COMMANDS="${SOCIALCRM_TOPIC_COMMANDS:-crm.identity.commands}"
SOCIALCRM_TOPIC_PRIVACY_COMMANDS="${SOCIALCRM_TOPIC_PRIVACY_COMMANDS:-crm.privacy.commands}"

# --- helpers ------------------------------------------------------------------
log()  { printf '[local] %s\n' "$*" >&2; }
warn() { printf '[local] WARNING: %s\n' "$*" >&2; }
die()  { printf '[local] ERROR: %s\n' "$*" >&2; exit 1; }

# Java classpath made of every jar fetched by deploy/local/kafka/pom.xml.
kafka_java_cp() {
  if ! compgen -G "$KAFKA_LIBS_DIR/*.jar" >/dev/null; then
    die "no Kafka jars in $KAFKA_LIBS_DIR (run deploy/local/up first)"
  fi
  printf '%s/*' "$KAFKA_LIBS_DIR"
}

# True if something accepts TCP connections on host:port.
port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Print the pid stored in a pid file if that process is alive.
pid_alive() {
  local f=$1 pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

# Run a Kafka CLI class (e.g. kafka.tools.StorageTool) with our classpath, quiet logging.
kafka_tool() {
  local cp
  cp=$(kafka_java_cp) || return 1
  java -Xmx512m -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$SOCIALCRM_ROOT/deploy/local/kafka/tools-log4j2.properties" \
    -cp "$cp" "$@"
}
