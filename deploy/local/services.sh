#!/usr/bin/env bash
# Runs the local services that ingestor needs for development, the demo and the tests, on
# 127.0.0.1 (the Milvus server as far as its version allows: see below):
#   kafka   Apache Kafka 4.1.1, one combined broker+controller node in KRaft mode, from the jars
#           that deploy/local/bootstrap.sh resolves (run with the machine's Java 17)
#   redis   Debian's redis-server, no persistence
#   milvus  a real Milvus 2.3.5 standalone server (embedded etcd, local storage, rocksmq), the
#           binary of the PyPI package `milvus` that bootstrap.sh unpacks under
#           $INGESTOR_HOME/milvus-server (optional: `up --milvus-server` or INGESTOR_MILVUS_SERVER=1;
#           by default ingestor serves a local Milvus Lite file from a child process of its own)
#   lite    the daemon's own Milvus Lite gRPC server, `python -m ingestor.lite` (optional:
#           `up --lite-server` or INGESTOR_LITE_SERVER=1)
#   kafkas  a second Kafka broker, SASL_SSL only (SCRAM-SHA-512, inter-broker too; SCRAM-SHA-256,
#           PLAIN, and OAUTHBEARER with unsecured JWTs, as Kafka's own tests use), plus a mutual-TLS
#           listener, and
#   rediss  Redis over TLS only, with a client certificate required, an ACL user and the default
#           user off, and
#   milvuss a second Milvus server, TLS only, with authentication on (user `ingestor`, role admin;
#           root's default password replaced): the secured services
#           (optional: `up --secure` or INGESTOR_SECURE_SERVICES=1). Their CA, server and client
#           certificates and the users' passwords are made on the first start under
#           $state/secure; each start writes $state/secure/secure.env, the INGESTOR_* variables a
#           client needs (`source` it)
#
# Milvus ports: besides its proxy (the gRPC/HTTP API) on P = INGESTOR_MILVUS_PORT, the server opens
# ten more, B+0..B+9 with B = 20000 + 10 * (P mod 1000), always within 20000-29999 (below the
# kernel's ephemeral range, 32768 up): B+0 proxy internal, +1 rootcoord, +2 querycoord,
# +3 querynode, +4 metrics and /healthz (HTTP), +5 indexnode, +6 datacoord, +7 datanode,
# +8 etcd client, +9 etcd peer. P=19530 takes 25300-25309; the fault suite's slots (P=19531 + 100 N)
# take 25310-19, 26310-19, ..., 29310-19, 20310-19, 21310-19, 22310-19: no two of these, nor Kafka's
# and Redis's ports (9092, 9093, 6379; 19092, 19093, 16379 + 100 N; the secured 9094, 9095, 9096, 6380),
# nor the secured server's (P=19535: 25350-25359) collide. Two values of P with the same last three digits (19530 and 29530) do collide: start
# refuses when a port is taken.
# etcd binds 127.0.0.1; Milvus 2.3 binds its gRPC and HTTP ports on all interfaces whatever the
# config says (its ip: settings, 127.0.0.1 here, only pick the address the components dial).
#
# The Milvus server as measured on 2 cores: it answers 2-3 s after a start on an empty state dir,
# 4-11 s after a restart (stop or kill -9) on existing data; ~210 MB RSS idle. Loaded collections
# come back by themselves, at first "not loaded", then Loaded. Strong-consistency reads then still
# wait until the previous process's etcd sessions expire (INGESTOR_MILVUS_SESSION_TTL): ~35 s from
# the start with the default 30. The same TTL bounds a freeze: after a SIGSTOP longer than about
# that, the sessions expire on SIGCONT and the server exits by itself. `stop` takes ~0.1 s. The
# server also writes /run/milvus/standalone-ingestor-PORT.pid (/tmp/milvus/ when /run is not
# writable) and /tmp/milvus/server_id_PID, paths compiled into it.
#
# Usage:
#   services.sh up [--milvus-server] [--lite-server] [--secure]  start what is not running;
#                                                         returns once all answer
#   services.sh down [--wipe]             stop what this script started; --wipe deletes all state
#   services.sh status [--milvus-server] [--lite-server]  one line per service; exit 0 iff the
#                                                         required ones are up
#   services.sh start SERVICE...          start one service (kafka|redis|milvus|lite|kafkas|rediss|
#                                         milvuss),
#                                         wait until ready
#   services.sh stop SERVICE...           stop one service (SIGTERM, then SIGKILL), keep its state
#   services.sh restart SERVICE...        stop, then start
#   services.sh pid SERVICE               print the pid of a service started by this script (each
#                                         service is its own process group: kill -- -PID)
#
# Environment (defaults in brackets):
#   INGESTOR_HOME [~/.cache/ingestor]    where bootstrap.sh put the Kafka jars (kafka/lib) and the
#                                        Milvus server (milvus-server)
#   INGESTOR_VENV [$INGESTOR_HOME/venv]  Python used for readiness checks and Milvus Lite
#   INGESTOR_STATE_DIR [<repo>/.state/services]  data, logs and pidfiles of all services
#   INGESTOR_KAFKA_PORT [9092]  INGESTOR_KAFKA_CONTROLLER_PORT [9093]
#   INGESTOR_REDIS_PORT [6379]  INGESTOR_MILVUS_PORT [19530]  INGESTOR_LITE_PORT [19540]
#   INGESTOR_REDISS_PORT [6380]  INGESTOR_KAFKAS_PORT [9094]  INGESTOR_KAFKAS_CONTROLLER_PORT [9095]
#   INGESTOR_KAFKAS_MTLS_PORT [9096]  INGESTOR_MILVUSS_PORT [19535]
#   INGESTOR_MILVUS_SERVER [0]  1: `up` and `status` include the Milvus server
#   INGESTOR_LITE_SERVER [0]    1: `up` and `status` include the Milvus Lite server
#   INGESTOR_SECURE_SERVICES [0]  1: `up` and `status` include the secured services (kafkas, rediss,
#                               milvuss)
#   INGESTOR_MILVUS_SESSION_TTL [30]  the Milvus server's etcd session TTL in seconds (Milvus's
#                               default): lower shortens the wait after a restart, and the longest
#                               SIGSTOP it survives
#   INGESTOR_KAFKA_HEAP_OPTS ["-Xms256m -Xmx1g"]  the broker's heap (the machine has 2 cores)
#   INGESTOR_KAFKA_CDS [1]      0: start the broker without its class-data archive (see below)
#   INGESTOR_SERVICES_TIMEOUT [60]  seconds to wait for a service to answer
#   INGESTOR_STOP_TIMEOUT [30]      seconds to wait after SIGTERM before SIGKILL
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${INGESTOR_HOME:-$HOME/.cache/ingestor}"
venv="${INGESTOR_VENV:-$home/venv}"
state="${INGESTOR_STATE_DIR:-$repo/.state/services}"
[[ "$state" == /* ]] || state="$PWD/$state" # the Milvus server runs in a directory of its own
kafka_lib="$home/kafka/lib"
milvus_version=2.3.5 # bootstrap.sh pins the same
milvus_home="$home/milvus-server"
milvus_bin="$milvus_home/milvus-$milvus_version/bin"
kafka_port="${INGESTOR_KAFKA_PORT:-9092}"
controller_port="${INGESTOR_KAFKA_CONTROLLER_PORT:-9093}"
redis_port="${INGESTOR_REDIS_PORT:-6379}"
milvus_port="${INGESTOR_MILVUS_PORT:-19530}"
lite_port="${INGESTOR_LITE_PORT:-19540}"
rediss_port="${INGESTOR_REDISS_PORT:-6380}"
kafkas_port="${INGESTOR_KAFKAS_PORT:-9094}"
kafkas_controller_port="${INGESTOR_KAFKAS_CONTROLLER_PORT:-9095}"
kafkas_mtls_port="${INGESTOR_KAFKAS_MTLS_PORT:-9096}"
milvuss_port="${INGESTOR_MILVUSS_PORT:-19535}"
ready_timeout="${INGESTOR_SERVICES_TIMEOUT:-60}"
milvus_session_ttl="${INGESTOR_MILVUS_SESSION_TTL:-30}"
stop_timeout="${INGESTOR_STOP_TIMEOUT:-30}"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
host=127.0.0.1
# Marks a directory as ours, so that `down --wipe` never deletes a directory it did not create
# (INGESTOR_STATE_DIR may be pointed anywhere).
marker=.ingestor-services

all_services=(kafka redis milvus lite kafkas rediss milvuss)

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the Usage block of the header; exits with $1 (2: a usage error).
usage() {
  sed -n '/^# Usage:/,/^# Environment/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# --- paths ---------------------------------------------------------------------------------------

pidfile() { echo "$state/run/$1.pid"; }

port_of() {
  case "$1" in
    kafka) echo "$kafka_port" ;;
    redis) echo "$redis_port" ;;
    milvus) echo "$milvus_port" ;;
    lite) echo "$lite_port" ;;
    rediss) echo "$rediss_port" ;;
    kafkas) echo "$kafkas_port" ;;
    milvuss) echo "$milvuss_port" ;;
  esac
}

# The log files to show when a service fails to come up.
logs_of() {
  case "$1" in
    kafka) echo "$state/logs/kafka.out $state/logs/kafka.log" ;;  # JVM stderr, then log4j2's
    redis) echo "$state/logs/redis.log" ;;
    milvus) echo "$state/logs/milvus.log" ;; # the server's own log, etcd's, and its stderr
    lite) echo "$state/logs/lite.log" ;;
    rediss) echo "$state/logs/rediss.log" ;;
    kafkas) echo "$state/logs/kafkas.out $state/logs/kafkas.log" ;;
    milvuss) echo "$state/logs/milvuss.log" ;;
  esac
}

check_service_name() {
  case "${1:-}" in
    kafka | redis | milvus | lite | kafkas | rediss | milvuss) ;;
    *) die "unknown service '${1:-}' (expected kafka, redis, milvus, lite, kafkas, rediss or milvuss)" ;;
  esac
}

init_state() {
  if [ -d "$state" ] && [ ! -e "$state/$marker" ] && [ -n "$(ls -A "$state")" ]; then
    die "$state exists, is not empty and was not created by services.sh; set INGESTOR_STATE_DIR"
  fi
  mkdir -p "$state/run" "$state/logs"
  touch "$state/$marker"
}

# --- processes -----------------------------------------------------------------------------------

# Whether PID is a running process. A killed daemon is reparented to PID 1, which may take a while
# to reap it; until then it is a zombie that `kill -0` still reports as alive.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # the fields after "pid (comm) "; the first one is the state
  [ "${stat%% *}" != Z ] && [ "${stat%% *}" != X ]
}

# Whether PID is still the process we started for SERVICE: the pidfile may outlive a reboot or a
# crash, and the pid may since have been reused by an unrelated process that we must not signal.
pid_is_service() {
  local svc=$1 pid=$2 cmdline
  alive "$pid" || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$svc" in
    kafka) [[ "$cmdline" == *"$state/kafka/server.properties"* ]] ;;
    kafkas) [[ "$cmdline" == *"$state/kafkas/server.properties"* ]] ;;
    # redis-server rewrites its argv to "redis-server 127.0.0.1:PORT", so match the program.
    redis | rediss) [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] ;;
    # The server runs as $state/milvus/milvus, a link to the binary (see launch_milvus). Also
    # matched: the Lite server that services.sh ran as `milvus` before, so that stop, down and
    # start (which replaces it) still reach it.
    milvus) [[ "$cmdline" == "$state/milvus/milvus run standalone "* ]] || legacy_lite "$pid" ;;
    milvuss) [[ "$cmdline" == "$state/milvuss/milvus run standalone "* ]] ;;
    lite) [[ "$cmdline" == *" -m ingestor.lite --data-dir $state/lite "* ]] ;;
  esac
}

# Whether PID is a Milvus Lite server that an older services.sh started as its `milvus` service.
legacy_lite() {
  [[ "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" == *" -m ingestor.lite --data-dir $state/milvus "* ]]
}

# Prints the pid of SERVICE if this script started it and it is still running; a stale pidfile
# (process gone or pid reused) is removed.
live_pid() {
  local svc=$1 f pid
  f="$(pidfile "$svc")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && pid_is_service "$svc" "$pid"; then
    echo "$pid"
    return 0
  fi
  rm -f "$f"
  return 1
}

# Same as live_pid but never touches the pidfile (for `status`, which changes nothing).
peek_pid() {
  local svc=$1 pid
  pid="$(cat "$(pidfile "$svc")" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && pid_is_service "$svc" "$pid" && echo "$pid"
}

# Starts a command detached from this shell: setsid gives it its own session and process group
# (no SIGHUP when the invoking terminal or pytest goes away, and `stop` can signal the whole group,
# children included), stdin/stdout/stderr are not inherited (a caller that captures our output,
# such as subprocess.run(capture_output=True), would otherwise wait for the daemon to exit), and
# every other inherited fd is closed (our lock on fd 9, which the daemon would otherwise hold, and
# whatever pipes the caller leaked to us). The process writes its own pid before exec'ing, which
# is right whether or not setsid had to fork.
launch() {
  local svc=$1 out=$2 f log_file
  shift 2
  f="$(pidfile "$svc")"
  rm -f "$f"
  # Where this start begins in each log, so that a failure shows this start's lines only.
  for log_file in $(logs_of "$svc"); do
    echo "$log_file $(stat -c %s "$log_file" 2>/dev/null || echo 0)"
  done >"$state/run/$svc.logpos"
  # shellcheck disable=SC2016  # $$, $0 and $fd are meant for the inner bash
  setsid nohup bash -c '
    echo $$ >"$0"
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      [ "$fd" -le 2 ] || eval "exec $fd>&-"
    done
    exec "$@"' "$f" "$@" </dev/null >>"$out" 2>&1 &
  local waited=0
  until [ -s "$f" ]; do
    sleep 0.05
    waited=$((waited + 1))
    [ "$waited" -lt 100 ] || die "$svc: launcher did not write $f"
  done
}

# Milliseconds since the epoch, for reporting how long a start or stop took.
now_ms() { local us="${EPOCHREALTIME//[!0-9]/}"; echo $((10#$us / 1000)); }
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%01d s' $((ms / 1000)) $((ms % 1000 / 100)); }

tcp_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# --- Kafka ---------------------------------------------------------------------------------------

ensure_kafka_jars() {
  if [ ! -f "$home/kafka/.resolved" ] || [ ! -f "$kafka_lib/kafka_2.13-4.1.1.jar" ]; then
    log "Kafka jars missing under $kafka_lib: running bootstrap.sh"
    bash "$here/bootstrap.sh"
  fi
  command -v "$java" >/dev/null 2>&1 || die "java not found (Kafka needs Java 17+)"
}

# What both brokers (the open one and the secured one) of this one-node cluster set alike.
kafka_node_properties() {
  cat <<EOF
log.dirs=$1/data
num.partitions=4
auto.create.topics.enable=true
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests start consumer groups often: do not wait 3 s for more members to join.
group.initial.rebalance.delay.ms=0
# After a crash (SIGKILL) the restarted controller still holds the dead broker's registration and
# refuses the new one until that session times out: 9 s by default, 4 s here. The heartbeat must
# stay well under the timeout.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
# The default 128 MiB cleaner buffer would be an eighth of the small heap.
log.cleaner.dedupe.buffer.size=16777216
EOF
}

# Written on every start, so that a change of port takes effect without a wipe.
write_kafka_config() {
  local d="$state/kafka"
  mkdir -p "$d/data"
  cat >"$d/server.properties" <<EOF
# Written by deploy/local/services.sh on every start: edits here are lost.
process.roles=broker,controller
node.id=1
# A static one-voter quorum: the voter's address lives in this file, not in the formatted
# metadata log (as --standalone's dynamic quorum would store it), so the ports can change later.
controller.quorum.voters=1@$host:$controller_port
listeners=PLAINTEXT://$host:$kafka_port,CONTROLLER://$host:$controller_port
advertised.listeners=PLAINTEXT://$host:$kafka_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
EOF
  kafka_node_properties "$d" >>"$d/server.properties"
  # Kafka 4.x logs through SLF4J into Log4j 2 (log4j-slf4j-impl, see deploy/kafka/pom.xml).
  # Everything goes to one size-capped file; nothing to the console.
  cat >"$d/log4j2.properties" <<EOF
# Written by deploy/local/services.sh on every start: edits here are lost.
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $state/logs/kafka.log
appender.file.filePattern = $state/logs/kafka.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# One line per request at DEBUG/TRACE; keep it quiet.
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

kafka_java() {
  "$java" -Dlog4j2.configurationFile="$state/kafka/log4j2.properties" \
    -Djava.awt.headless=true -cp "$kafka_lib/*" "$@"
}

# Formats the storage once; a restart reuses it (and its topics and offsets). StorageTool also
# has `format --standalone` for a dynamic quorum, which does not apply to the static voter above.
format_kafka_storage() {
  local data="$state/kafka/data" cluster_id
  [ -f "$data/meta.properties" ] && return 0
  cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$state/logs/kafka.out")"
  log "kafka: formatting $data (cluster id $cluster_id)"
  kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$state/kafka/server.properties" \
    >>"$state/logs/kafka.out" 2>&1 || { tail -n 20 "$state/logs/kafka.out" >&2; die "kafka: format failed"; }
}

# Class-data sharing: loading and verifying Kafka's ~6000 classes is a third of its start on two
# cores. The first broker run records them (-XX:ArchiveClassesAtExit, written when the JVM exits,
# which makes that one stop take ~3 s); every later start maps the archive and comes up ~1 s
# sooner. The archive belongs to one JDK and one set of jars, so it lives beside the jars (a
# wipe keeps it), named after both; a JVM that finds it stale anyway just starts without it.
kafka_cds_archive() {
  local key
  key="$(stat -L -c '%n %s %Y' "$(command -v "$java")" "$home/kafka/.resolved" | cksum | cut -d' ' -f1)"
  echo "$home/kafka/cds/kafka-$key.jsa"
}

# Prints the JVM options for the archive, one per line.
kafka_cds_opts() {
  local archive
  rm -f "$state/kafka/cds.jsa.tmp" # left by a broker that did not exit cleanly
  [ "${INGESTOR_KAFKA_CDS:-1}" = 1 ] || return 0
  archive="$(kafka_cds_archive)"
  echo "-Xlog:cds=off,cds+dynamic=off"
  if [ -f "$archive" ]; then
    echo "-XX:SharedArchiveFile=$archive"
  else
    echo "-XX:ArchiveClassesAtExit=$state/kafka/cds.jsa.tmp"
  fi
}

# After a broker has exited: keep the archive it wrote, if it exited cleanly. The rename makes it
# appear whole, also when two state dirs' brokers race to write one.
kafka_cds_keep() {
  local clean=$1 archive tmp="$state/kafka/cds.jsa.tmp"
  [ -f "$tmp" ] || return 0
  if [ "$clean" = 1 ]; then
    archive="$(kafka_cds_archive)"
    mkdir -p "${archive%/*}"
    mv -f "$tmp" "$archive"
    # Archives for an older JDK or jar set are of no more use (each is ~50 MB).
    find "${archive%/*}" -name 'kafka-*.jsa' ! -path "$archive" -delete
  else
    rm -f "$tmp"
  fi
}

launch_kafka() {
  local heap cds
  ensure_kafka_jars
  write_kafka_config
  format_kafka_storage
  read -ra heap <<<"${INGESTOR_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
  mapfile -t cds < <(kafka_cds_opts)
  # Mirrors kafka-run-class.sh's defaults, with a heap sized for a small machine (2 cores).
  launch kafka "$state/logs/kafka.out" \
    "$java" "${heap[@]}" "${cds[@]}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$state/logs" \
    -Dlog4j2.configurationFile="$state/kafka/log4j2.properties" \
    -cp "$kafka_lib/*" kafka.Kafka "$state/kafka/server.properties"
}

# A real check: the broker answers a metadata request, not only a TCP connect.
kafka_ready() {
  tcp_open "$kafka_port" || return 1
  timeout 10 "$venv/bin/python" - "$host:$kafka_port" <<'EOF' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id="services.sh",
                         bootstrap_timeout_ms=3000, request_timeout_ms=3000)
try:
    admin.list_topics()
finally:
    admin.close()
EOF
}

# --- Redis ---------------------------------------------------------------------------------------

launch_redis() {
  command -v redis-server >/dev/null 2>&1 || die "redis-server not found: run deploy/local/bootstrap.sh"
  mkdir -p "$state/redis"
  # A cache only: no RDB snapshots, no AOF. Not daemonized: launch() detaches it and knows its pid.
  launch redis "$state/logs/redis.log" \
    redis-server --bind "$host" --port "$redis_port" --protected-mode yes \
    --save "" --appendonly no --dir "$state/redis" --daemonize no
}

redis_ready() {
  [ "$(timeout 2 redis-cli -h "$host" -p "$redis_port" ping 2>/dev/null)" = PONG ]
}

# --- the secured services --------------------------------------------------------------------

secure="$state/secure"

secure_passwords=(redis-password kafka-password kafka-broker-password kafka-key-password milvus-password
  milvus-root-password kafka-client-key-password)

# Each password that is missing (a state dir made before a service existed lacks its own).
ensure_secure_passwords() {
  local f
  command -v openssl >/dev/null 2>&1 || die "openssl not found: run deploy/local/bootstrap.sh"
  for f in "${secure_passwords[@]}"; do
    [ -s "$secure/$f" ] || (umask 077 && openssl rand -hex 24 >"$secure/$f")
  done
}

# A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and the ACL user's
# password, made once (kept across restarts, so that clients' secure.env stays valid).
ensure_secure_material() {
  mkdir -p "$secure"
  chmod 700 "$secure"
  ensure_secure_passwords
  if ! [ -s "$secure/client.pem" ] || ! [ -s "$secure/kafka-keystore.pem" ]; then make_secure_material; fi
  # The client key again, encrypted with a password of its own (kafka.ssl_keyfile with
  # kafka.ssl_password_file, for the mutual-TLS listener); client.key stays plain for Redis, whose
  # settings take no key password. Made apart, so that an older state dir gets it too.
  if ! [ -s "$secure/kafka-client.key" ]; then
    (umask 077 && openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$secure/client.key" \
      -passout "file:$secure/kafka-client-key-password" -out "$secure/kafka-client.key") \
      || die "could not encrypt the client key under $secure"
  fi
}

make_secure_material() {
  command -v openssl >/dev/null 2>&1 || die "openssl not found: run deploy/local/bootstrap.sh"
  (
    cd "$secure"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ingestor local CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    for who in server client; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=ingestor $who" -keyout "$who.key" -out "$who.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$who.ext"
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$who.ext" -out "$who.pem" 2>/dev/null
      rm -f "$who.csr" "$who.ext"
    done
    # The broker's PEM keystore: its key, encrypted as Java 17 can read (PBES2 it cannot), then its
    # certificate.
    (umask 077 && openssl pkcs8 -topk8 -in server.key -v1 PBE-SHA1-3DES -passout file:kafka-key-password \
      -out kafka-server.key && cat kafka-server.key server.pem >kafka-keystore.pem && rm -f kafka-server.key)
    chmod 600 ./*.key ./*-password kafka-keystore.pem
  ) || die "could not make the certificates under $secure"
  log "made a CA, certificates and passwords under $secure"
}

write_secure_env() {
  cat >"$secure/secure.env" <<ENV
# Written by deploy/local/services.sh: what an ingestor client needs for the secured services.
export INGESTOR_REDIS__URL=rediss://$host:$rediss_port/0
export INGESTOR_REDIS__USERNAME=ingestor
export INGESTOR_REDIS__PASSWORD_FILE=$secure/redis-password
export INGESTOR_REDIS__SSL_CA_FILE=$secure/ca.pem
export INGESTOR_REDIS__SSL_CERTFILE=$secure/client.pem
export INGESTOR_REDIS__SSL_KEYFILE=$secure/client.key
export INGESTOR_KAFKA__BOOTSTRAP_SERVERS=$host:$kafkas_port
export INGESTOR_KAFKA__SECURITY_PROTOCOL=SASL_SSL
export INGESTOR_KAFKA__SASL_MECHANISM=SCRAM-SHA-512
export INGESTOR_KAFKA__SASL_USERNAME=ingestor
export INGESTOR_KAFKA__SASL_PASSWORD_FILE=$secure/kafka-password
export INGESTOR_KAFKA__SSL_CAFILE=$secure/ca.pem
export INGESTOR_MILVUS__URI=https://$host:$milvuss_port
export INGESTOR_MILVUS__USER=ingestor
export INGESTOR_MILVUS__PASSWORD_FILE=$secure/milvus-password
export INGESTOR_MILVUS__CA_FILE=$secure/ca.pem
# Kafka with mutual TLS instead of a login: the broker's MTLS listener.
#   INGESTOR_KAFKA__BOOTSTRAP_SERVERS=$host:$kafkas_mtls_port INGESTOR_KAFKA__SECURITY_PROTOCOL=SSL
#   INGESTOR_KAFKA__SSL_CERTFILE=$secure/client.pem INGESTOR_KAFKA__SSL_KEYFILE=$secure/kafka-client.key
#   INGESTOR_KAFKA__SSL_PASSWORD_FILE=$secure/kafka-client-key-password (the key is encrypted)
#   (and no SASL settings)
ENV
}

# SASL_SSL on the listener clients reach, the broker's own connections included (as user `broker`),
# with SCRAM-SHA-512, SCRAM-SHA-256, PLAIN or OAUTHBEARER (user ingestor, one password); MTLS, a second one, takes TLS with a client certificate that our
# CA signed instead of a login; the controller listener is plaintext on loopback, as in the open
# broker. OAUTHBEARER checks tokens with Kafka's default validator, which takes unsigned JWTs (fine
# for a local stack; production brokers validate against their identity provider). Written on
# every start, like the open broker's: the passwords are in it, so it is private.
write_kafkas_config() {
  local d="$state/kafkas"
  mkdir -p "$d/data"
  (umask 077 && cat >"$d/server.properties" <<PROPS
# Written by deploy/local/services.sh on every start: edits here are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$kafkas_controller_port
listeners=SASL_SSL://$host:$kafkas_port,MTLS://$host:$kafkas_mtls_port,CONTROLLER://$host:$kafkas_controller_port
advertised.listeners=SASL_SSL://$host:$kafkas_port,MTLS://$host:$kafkas_mtls_port
listener.security.protocol.map=SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN,OAUTHBEARER
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(cat "$secure/kafka-broker-password")";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="$(cat "$secure/kafka-broker-password")" user_broker="$(cat "$secure/kafka-broker-password")" user_ingestor="$(cat "$secure/kafka-password")";
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
listener.name.mtls.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$secure/kafka-keystore.pem
ssl.key.password=$(cat "$secure/kafka-key-password")
ssl.truststore.type=PEM
ssl.truststore.location=$secure/ca.pem
PROPS
  kafka_node_properties "$d" >>"$d/server.properties"
  )
  sed "s#$state/logs/kafka.log#$state/logs/kafkas.log#g" "$state/kafka/log4j2.properties" >"$d/log4j2.properties"
}

# The SCRAM users live in the metadata log: written by the format, before the first start.
format_kafkas_storage() {
  local data="$state/kafkas/data" cluster_id
  [ -f "$data/meta.properties" ] && return 0
  cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$state/logs/kafkas.out")"
  log "kafkas: formatting $data (cluster id $cluster_id) with SCRAM users ingestor and broker"
  kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$state/kafkas/server.properties" \
    --add-scram "SCRAM-SHA-512=[name=ingestor,password=$(cat "$secure/kafka-password")]" \
    --add-scram "SCRAM-SHA-256=[name=ingestor,password=$(cat "$secure/kafka-password")]" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$(cat "$secure/kafka-broker-password")]" \
    >>"$state/logs/kafkas.out" 2>&1 || { tail -n 20 "$state/logs/kafkas.out" >&2; die "kafkas: format failed"; }
}

launch_kafkas() {
  local heap
  ensure_kafka_jars
  ensure_secure_material
  write_kafka_config # the open broker's files, whose log4j configuration this one copies
  write_kafkas_config
  write_secure_env
  format_kafkas_storage
  read -ra heap <<<"${INGESTOR_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
  launch kafkas "$state/logs/kafkas.out" \
    "$java" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$state/logs" -Dlog4j2.configurationFile="$state/kafkas/log4j2.properties" \
    -cp "$kafka_lib/*" kafka.Kafka "$state/kafkas/server.properties"
}

# A metadata request as the ingestor user, over TLS checked against our CA.
kafkas_ready() {
  tcp_open "$kafkas_port" && [ -s "$secure/kafka-password" ] || return 1
  timeout 15 "$venv/bin/python" - "$host:$kafkas_port" "$secure" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
secure = sys.argv[2]
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id="services.sh", security_protocol="SASL_SSL",
                         sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="ingestor",
                         sasl_plain_password=open(f"{secure}/kafka-password").read().strip(),
                         ssl_cafile=f"{secure}/ca.pem", bootstrap_timeout_ms=5000, request_timeout_ms=5000)
try:
    admin.list_topics()
finally:
    admin.close()
PY
}

# TLS only (no plaintext port), with a client certificate that our CA signed; the default user is
# off: only the ACL user gets in, whose password lives in an ACL file (never on a command line,
# where `ps` would show it).
launch_rediss() {
  command -v redis-server >/dev/null 2>&1 || die "redis-server not found: run deploy/local/bootstrap.sh"
  ensure_secure_material
  mkdir -p "$state/rediss"
  (umask 077 && printf 'user default off\nuser ingestor on >%s ~* &* +@all\n' "$(cat "$secure/redis-password")" \
    >"$state/rediss/users.acl")
  write_secure_env
  launch rediss "$state/logs/rediss.log" \
    redis-server --bind "$host" --port 0 --tls-port "$rediss_port" --protected-mode yes \
    --tls-cert-file "$secure/server.pem" --tls-key-file "$secure/server.key" \
    --tls-ca-cert-file "$secure/ca.pem" --tls-auth-clients yes \
    --aclfile "$state/rediss/users.acl" --save "" --appendonly no --dir "$state/rediss" --daemonize no
}

# A TLS handshake against our CA with our client certificate, and the ACL user's login
# (REDISCLI_AUTH keeps the password off the command line).
rediss_ready() {
  [ -s "$secure/redis-password" ] || return 1
  [ "$(REDISCLI_AUTH="$(cat "$secure/redis-password")" timeout 2 redis-cli --tls --cacert "$secure/ca.pem" \
    --cert "$secure/client.pem" --key "$secure/client.key" \
    -h "$host" -p "$rediss_port" --user ingestor --no-auth-warning ping 2>/dev/null)" = PONG ]
}

# --- Milvus server -------------------------------------------------------------------------------

ensure_milvus_server() {
  if [ "$(cat "$milvus_home/.ingestor-milvus" 2>/dev/null)" != "$milvus_version" ] \
    || [ ! -x "$milvus_bin/milvus" ]; then
    log "Milvus $milvus_version server missing under $milvus_home: running bootstrap.sh"
    bash "$here/bootstrap.sh"
  fi
}

# Prints "PORT NAME" for every port the server of SERVICE (milvus or milvuss) opens besides its
# proxy port (see the header).
milvus_internal_ports() {
  local port base i=0 name
  port="$(port_of "$1")"
  if ! [[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$port" -gt 65535 ]; then
    die "INGESTOR_${1^^}_PORT=$port is not a port number"
  fi
  base=$((20000 + 10 * (port % 1000)))
  for name in proxy-internal rootcoord querycoord querynode metrics indexnode datacoord datanode \
    etcd-client etcd-peer; do
    echo "$((base + i)) $name"
    i=$((i + 1))
  done
}

# Written on every start from the package's own template (the one its `milvus-server` wrapper
# fills in), so that a change of port takes effect without a wipe. SERVICE milvuss: TLS only
# (tlsMode 1, our server certificate) and authentication on.
write_milvus_config() {
  local svc=$1 d="$state/$1" port name args=() secured=""
  mkdir -p "$d/configs"
  while read -r port name; do args+=("$name=$port"); done < <(milvus_internal_ports "$svc")
  [ "$svc" != milvuss ] || secured="$secure"
  "$milvus_home/bin/python" - "$d" "$(port_of "$svc")" "$milvus_session_ttl" "$secured" "${args[@]}" <<'EOF' \
    || die "$svc: could not write $d/configs"
import re, sys
from pathlib import Path

import milvus

d, proxy_port, session_ttl, secured = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
port = dict(arg.split("=") for arg in sys.argv[5:])
security = {"authorization_enabled": "true", "tls_mode": 1, "server_pem_path": f"{secured}/server.pem",
            "server_key_path": f"{secured}/server.key", "ca_pem_path": f"{secured}/ca.pem"} if secured else {}
values = {
    **security,
    "proxy_port": proxy_port, "proxy_internal_port": port["proxy-internal"],
    "root_coord_port": port["rootcoord"], "query_coord_port": port["querycoord"],
    "query_node_port": port["querynode"], "index_node_port": port["indexnode"],
    # Only dialled in bindIndexNodeMode, which is off: the index node's own port.
    "index_coord_port": port["indexnode"], "data_coord_port": port["datacoord"],
    "data_node_port": port["datanode"], "etcd_port": port["etcd-client"],
    "etcd_data_dir": d / "etcd", "local_storage_dir": d / "data", "rocksmq_data_dir": d / "rocksmq",
    # No log files: everything goes to stdout, which services.sh sends to logs/milvus.log.
    "system_log_path": "", "etcd_log_path": "stdout",
}
template = Path(milvus.__file__).parent / "data" / "config.yaml.template"

def fill(m):  # {{ key }}, {{ key(type) }} or {{ key(type): default }}
    key, _, default = m.group(1).partition(":")
    key = key.split("(")[0].strip()
    if key in values:
        return str(values[key])
    if not default.strip():
        raise SystemExit(f"no value for {key} in {template}")
    return default.strip()

text = re.sub(r"\{\{(.*?)\}\}", fill, template.read_text())
# The address each component registers in etcd and the others dial (default: the first non-loopback
# address). Milvus 2.3 still listens on all interfaces.
text, n = re.subn(r"(?m)^  ip:.*$", "  ip: 127.0.0.1", text)
assert n == 7, n
# The embedded etcd reads its listeners from a file of its own; without one it takes 2379 and 2380.
text = text.replace("  data:\n    dir: ", f"  config:\n    path: {d}/configs/etcd.yaml\n  data:\n    dir: ", 1)
assert "configs/etcd.yaml" in text
# On SIGTERM the query node waits for its segments to move to another node before it stops: with
# no other node it would wait out common.gracefulStopTimeout (1800 s), until `stop` kills it.
text = text.replace("\nqueryNode:\n", "\nqueryNode:\n  gracefulStopTimeout: 0\n", 1)
assert "gracefulStopTimeout: 0" in text
text, n = re.subn(r"(?m)^    ttl: 30 #", f"    ttl: {session_ttl} #", text)
assert n == 1, n
header = "# Written by deploy/local/services.sh on every start: edits here are lost.\n"
(d / "configs" / "milvus.yaml").write_text(header + text)
etcd_peer = f"http://127.0.0.1:{port['etcd-peer']}"
etcd_client = f"http://127.0.0.1:{port['etcd-client']}"
(d / "configs" / "etcd.yaml").write_text(header + f"""name: default
listen-client-urls: {etcd_client}
advertise-client-urls: {etcd_client}
listen-peer-urls: {etcd_peer}
initial-advertise-peer-urls: {etcd_peer}
initial-cluster: default={etcd_peer}
# As Milvus's own embedEtcd.yaml: keep etcd's history bounded.
auto-compaction-mode: revision
auto-compaction-retention: '1000'
quota-backend-bytes: 4294967296
""")
# glog (knowhere, segcore): warnings and errors to stderr, no files.
(d / "configs" / "glog.conf").write_text("--logtostderr=true\n--minloglevel=1\n")
EOF
}

# Runs the binary itself, not the package's `milvus-server` wrapper: the wrapper is a Python parent
# that would unpack the binary into the data dir on each start, probe for free ports from fixed
# defaults (9091 upwards for the metrics port: Kafka's 9092 next), and die on SIGTERM at once,
# leaving the server to finish stopping after `stop` returned. Run directly, the server is the
# process group's leader and its only process (etcd runs inside it), and `stop` waits for it.
launch_milvus_server() {
  local svc=$1 d="$state/$1" port name
  ensure_milvus_server
  milvus_internal_ports "$svc" >/dev/null # dies here, not in the subshell below, on a bad port number
  while read -r port name; do
    if tcp_open "$port"; then
      die "$svc: port $port (its $name) is taken by another process; the server's ports follow from INGESTOR_${svc^^}_PORT=$(port_of "$svc") (see the header of $here/services.sh)"
    fi
  done < <(milvus_internal_ports "$svc")
  write_milvus_config "$svc"
  # The link puts the state dir into the process's command line (pid_is_service matches on it).
  ln -sfn "$milvus_bin/milvus" "$d/milvus"
  # cwd: the server writes rocksmq_meta_kv/ into it. MILVUSCONF: milvus.yaml and glog.conf.
  # -alias names its pidfile (/run/milvus/standalone-ALIAS.pid, or /tmp/milvus/ when /run is not
  # writable; the path is compiled in), which it locks: one name per instance on the machine.
  launch "$svc" "$state/logs/$svc.log" \
    env -C "$d" DEPLOY_MODE=STANDALONE MILVUSCONF="$d/configs/" \
    METRICS_PORT="$(milvus_internal_ports "$svc" | awk '$2 == "metrics" { print $1 }')" \
    LD_LIBRARY_PATH="$milvus_bin" \
    "$d/milvus" run standalone -alias "ingestor-$(port_of "$svc")"
}

launch_milvus() { launch_milvus_server milvus; }

launch_milvuss() {
  ensure_secure_material
  write_secure_env
  launch_milvus_server milvuss
}

# A real call through pymilvus, not only a TCP connect.
pymilvus_answers() {
  tcp_open "$1" || return 1
  timeout 20 "$venv/bin/python" -c "
from pymilvus import MilvusClient
MilvusClient('http://$host:$1', timeout=10).list_collections()" >/dev/null 2>&1
}

milvus_ready() { pymilvus_answers "$milvus_port"; }

# A call as user ingestor over TLS checked against our CA. The first time the server answers (as
# root with Milvus's default password), it makes that user, with the built-in role admin, and
# replaces root's password: the passwords come from files, through stdin, never the command line.
milvuss_ready() {
  tcp_open "$milvuss_port" && [ -s "$secure/milvus-password" ] || return 1
  timeout 30 "$venv/bin/python" - "https://$host:$milvuss_port" "$secure" <<'PY' >/dev/null 2>&1
import sys
from pathlib import Path

from pymilvus import MilvusClient

uri, secure = sys.argv[1], Path(sys.argv[2])
password, root = ((secure / f).read_text().strip() for f in ("milvus-password", "milvus-root-password"))
tls = {"secure": True, "server_pem_path": str(secure / "ca.pem"), "timeout": 10}
try:
    MilvusClient(uri, user="ingestor", password=password, **tls).list_collections()
except Exception:
    admin = MilvusClient(uri, user="root", password="Milvus", **tls)  # only on a new server
    if "ingestor" not in admin.list_users():
        admin.create_user("ingestor", password)
    admin.grant_role("ingestor", "admin")
    admin.update_password("root", "Milvus", root)
    MilvusClient(uri, user="ingestor", password=password, **tls).list_collections()
PY
}

# --- Milvus Lite server --------------------------------------------------------------------------

# The daemon's own Lite server (ingestor/lite.py): Milvus Lite with its per-row float check
# skipped for wire floats and its garbage collection tuned, which several workers can share.
launch_lite() {
  [ -x "$venv/bin/python" ] || die "$venv/bin/python not found: run deploy/local/bootstrap.sh"
  mkdir -p "$state/lite"
  PYTHONUNBUFFERED=1 launch lite "$state/logs/lite.log" \
    "$venv/bin/python" -m ingestor.lite --data-dir "$state/lite" --host "$host" --port "$lite_port"
}

lite_ready() { pymilvus_answers "$lite_port"; }

# --- generic lifecycle ---------------------------------------------------------------------------

# The readiness checks use the venv's kafka-python; without it Kafka would only ever "time out".
ensure_venv() {
  "$venv/bin/python" -c "import kafka.admin" >/dev/null 2>&1 && return 0
  log "no kafka-python in $venv: running bootstrap.sh"
  bash "$here/bootstrap.sh"
}

# Launches SERVICE unless it already answers or is already starting; does not wait.
ensure_launched() {
  local svc=$1 pid
  if pid="$(live_pid "$svc")"; then
    if [ "$svc" != milvus ] || ! legacy_lite "$pid"; then
      return 0 # ours and alive: answering already, or still starting (ensure_ready waits)
    fi
    log "milvus: pid $pid is the Milvus Lite server that an older services.sh ran as milvus; replacing it"
    stop_service milvus
  fi
  if "${svc}_ready"; then
    log "$svc: something already answers on $host:$(port_of "$svc") (not started by services.sh); leaving it alone"
    return 0
  fi
  log "$svc: starting on $host:$(port_of "$svc")"
  "launch_$svc"
}

# Waits until SERVICE answers; on a timeout or an early exit prints the tail of its log and fails.
ensure_ready() {
  local svc=$1 start=$SECONDS t0 pid
  t0="$(now_ms)"
  while true; do
    if "${svc}_ready"; then
      log "$svc: ready on $host:$(port_of "$svc") (waited $(since "$t0"))"
      return 0
    fi
    if ! pid="$(live_pid "$svc")"; then
      fail "$svc" "exited before answering on $host:$(port_of "$svc")"
    fi
    if [ $((SECONDS - start)) -ge "$ready_timeout" ]; then
      fail "$svc" "not answering on $host:$(port_of "$svc") after $ready_timeout s (pid $pid left running: \`services.sh stop $svc\` ends it)"
    fi
    sleep 0.25
  done
}

# Reports a service that did not come up, with what its logs said during this start: Kafka's
# first ERROR lines with the exception that follows them (its last lines are only the shutdown
# that the error caused), then the last lines.
fail() {
  local svc=$1 msg=$2 f pos size errors
  log "error: $svc $msg"
  while read -r f pos; do
    [ -s "$f" ] || continue
    size="$(stat -c %s "$f")"
    [ "$size" -ge "$pos" ] || pos=0 # the log rolled over meanwhile
    errors="$(tail -c +$((pos + 1)) "$f" | grep -E -A4 '^\[[^]]*\] (ERROR|FATAL) ' | head -n 40 || true)"
    if [ -n "$errors" ]; then
      log "--- first errors in $f"
      printf '%s\n' "$errors" >&2
    fi
    [ "$size" -gt "$pos" ] || continue
    log "--- last lines of $f"
    tail -c +$((pos + 1)) "$f" | tail -n 20 >&2
  done < <(cat "$state/run/$svc.logpos" 2>/dev/null || for f in $(logs_of "$svc"); do echo "$f 0"; done)
  exit 1
}

# SIGTERM to the service's process group, wait up to $stop_timeout s, then SIGKILL. Returns only
# once the process is gone, so that a following start does not find Kafka's data dir still locked.
stop_service() {
  local svc=$1 pid target t0 deadline killed=0
  if ! pid="$(live_pid "$svc")"; then
    if "${svc}_ready"; then
      log "$svc: answering on $host:$(port_of "$svc") but not started by services.sh; not stopping it"
    else
      log "$svc: not running"
    fi
    return 0
  fi
  # launch() made the service a process-group leader: signal the group to take its children too.
  target="$pid"
  [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ] && target="-$pid"
  log "$svc: stopping pid $pid"
  t0="$(now_ms)"
  deadline=$((t0 + stop_timeout * 1000))
  kill -TERM -- "$target" 2>/dev/null || true
  while alive "$pid"; do
    if [ "$killed" = 0 ] && [ "$(now_ms)" -ge "$deadline" ]; then
      log "$svc: still running after $stop_timeout s; sending SIGKILL"
      kill -KILL -- "$target" 2>/dev/null || true
      killed=1
      deadline=$(($(now_ms) + 10000))
    elif [ "$killed" = 1 ] && [ "$(now_ms)" -ge "$deadline" ]; then
      die "$svc: pid $pid survived SIGKILL"
    fi
    sleep 0.1
  done
  rm -f "$(pidfile "$svc")"
  if [ "$svc" = kafka ]; then
    kafka_cds_keep $((1 - killed)) || log "kafka: could not keep the class-data archive (harmless)"
  fi
  log "$svc: stopped in $(since "$t0")"
}

# Starts SERVICEs together (Kafka's JVM and Milvus start in parallel), then waits for each.
start_services() {
  local svc
  init_state
  ensure_venv
  for svc in "$@"; do ensure_launched "$svc"; done
  for svc in "$@"; do ensure_ready "$svc"; done
}

# Serializes commands that start or stop services (two concurrent `up`s would start two brokers).
take_lock() {
  init_state
  exec 9>"$state/run/lock"
  flock -w 120 9 || die "another services.sh holds $state/run/lock"
}

# The optional services asked for, one per line, from the environment and the flags in "$@"
# (a usage error for any other argument).
optional_wanted() {
  local milvus="${INGESTOR_MILVUS_SERVER:-0}" lite="${INGESTOR_LITE_SERVER:-0}" arg
  local secured="${INGESTOR_SECURE_SERVICES:-0}"
  for arg in "$@"; do
    case "$arg" in
      --milvus-server) milvus=1 ;;
      --lite-server) lite=1 ;;
      --secure) secured=1 ;;
      *) usage ;;
    esac
  done
  [ "$milvus" != 1 ] || echo milvus
  [ "$lite" != 1 ] || echo lite
  [ "$secured" != 1 ] || printf '%s\n' kafkas rediss milvuss
}

# --- commands ------------------------------------------------------------------------------------

cmd_up() {
  local services=(kafka redis) optional
  optional="$(optional_wanted "$@")" || exit
  [ -z "$optional" ] || mapfile -t -O 2 services <<<"$optional"
  take_lock
  start_services "${services[@]}"
  log "up: ${services[*]} (state in $state)"
}

cmd_down() {
  local wipe=0 svc
  case "${1:-}" in
    "") ;;
    --wipe) wipe=1 ;;
    *) usage ;;
  esac
  if [ -d "$state" ] && [ -n "$(ls -A "$state")" ]; then
    [ -e "$state/$marker" ] || die "$state was not created by services.sh; not touching it"
    take_lock
    for svc in milvuss rediss kafkas lite milvus redis kafka; do stop_service "$svc"; done
  fi
  if [ "$wipe" = 1 ]; then
    rm -rf "$state"
    log "wiped $state"
  fi
}

cmd_status() {
  local svc pid port required rc=0 line optional
  optional="$(optional_wanted "$@")" || exit
  for svc in "${all_services[@]}"; do
    port="$(port_of "$svc")"
    required=1
    # An optional service counts when asked for, or when services.sh started it and it should
    # still be there.
    if { [ "$svc" = milvus ] || [ "$svc" = lite ] || [ "$svc" = kafkas ] || [ "$svc" = rediss ] \
      || [ "$svc" = milvuss ]; } \
      && ! grep -qx "$svc" <<<"$optional" \
      && [ ! -f "$(pidfile "$svc")" ]; then
      required=0
    fi
    pid="$(peek_pid "$svc" || true)"
    if "${svc}_ready"; then
      line="up        $host:$port  pid ${pid:-? (not started by services.sh)}"
    elif [ -n "$pid" ]; then
      line="starting  $host:$port  pid $pid (not answering yet)"
      [ "$required" = 1 ] && rc=1
    else
      line="down      $host:$port"
      [ "$required" = 1 ] && rc=1
      [ "$required" = 0 ] && line+="  (optional: up $(case "$svc" in kafkas | rediss | milvuss) echo --secure ;; *) echo "--$svc-server" ;; esac))"
    fi
    printf '%-7s %s\n' "$svc" "$line"
  done
  return "$rc"
}

cmd_start() {
  local svc
  [ $# -ge 1 ] || usage
  for svc in "$@"; do check_service_name "$svc"; done
  take_lock
  start_services "$@"
}

cmd_stop() {
  local svc
  [ $# -ge 1 ] || usage
  for svc in "$@"; do check_service_name "$svc"; done
  [ -d "$state" ] || { log "nothing to stop: no $state"; return 0; }
  take_lock
  for svc in "$@"; do stop_service "$svc"; done
}

cmd_pid() {
  [ $# -eq 1 ] || usage
  check_service_name "$1"
  peek_pid "$1" || die "$1 is not running (or was not started by services.sh)"
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart) cmd_stop "$@" && cmd_start "$@" ;;
    pid) cmd_pid "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
