#!/usr/bin/env bash
# Runs the local services that ingestor needs for development, the demo and the tests, all bound
# to 127.0.0.1 only:
#   kafka   Apache Kafka 4.1.1, one combined broker+controller node in KRaft mode, from the jars
#           that deploy/local/bootstrap.sh resolves (run with the machine's Java 17)
#   redis   Debian's redis-server, no persistence
#   milvus  a Milvus Lite gRPC server (optional: `up --milvus-server` or INGESTOR_MILVUS_SERVER=1;
#           by default ingestor opens Milvus Lite in-process on a local file)
#
# Usage:
#   services.sh up [--milvus-server]      start what is not running; returns once all answer
#   services.sh down [--wipe]             stop what this script started; --wipe deletes all state
#   services.sh status [--milvus-server]  one line per service; exit 0 iff the required ones are up
#   services.sh start SERVICE...          start one service (kafka|redis|milvus), wait until ready
#   services.sh stop SERVICE...           stop one service (SIGTERM, then SIGKILL), keep its state
#   services.sh restart SERVICE...        stop, then start
#   services.sh pid SERVICE               print the pid of a service started by this script
#
# Environment (defaults in brackets):
#   INGESTOR_HOME [~/.cache/ingestor]    where bootstrap.sh put the Kafka jars (kafka/lib)
#   INGESTOR_VENV [$INGESTOR_HOME/venv]  Python used for readiness checks and Milvus Lite
#   INGESTOR_STATE_DIR [<repo>/.state/services]  data, logs and pidfiles of all services
#   INGESTOR_KAFKA_PORT [9092]  INGESTOR_KAFKA_CONTROLLER_PORT [9093]
#   INGESTOR_REDIS_PORT [6379]  INGESTOR_MILVUS_PORT [19530]
#   INGESTOR_MILVUS_SERVER [0]  1: `up` and `status` include the Milvus Lite server
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
kafka_lib="$home/kafka/lib"
kafka_port="${INGESTOR_KAFKA_PORT:-9092}"
controller_port="${INGESTOR_KAFKA_CONTROLLER_PORT:-9093}"
redis_port="${INGESTOR_REDIS_PORT:-6379}"
milvus_port="${INGESTOR_MILVUS_PORT:-19530}"
ready_timeout="${INGESTOR_SERVICES_TIMEOUT:-60}"
stop_timeout="${INGESTOR_STOP_TIMEOUT:-30}"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
host=127.0.0.1
# Marks a directory as ours, so that `down --wipe` never deletes a directory it did not create
# (INGESTOR_STATE_DIR may be pointed anywhere).
marker=.ingestor-services

all_services=(kafka redis milvus)

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
  esac
}

# The log files to show when a service fails to come up.
logs_of() {
  case "$1" in
    kafka) echo "$state/logs/kafka.out $state/logs/kafka.log" ;;  # JVM stderr, then log4j2's
    redis) echo "$state/logs/redis.log" ;;
    milvus) echo "$state/logs/milvus.log" ;;
  esac
}

check_service_name() {
  case "${1:-}" in
    kafka | redis | milvus) ;;
    *) die "unknown service '${1:-}' (expected kafka, redis or milvus)" ;;
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
    # redis-server rewrites its argv to "redis-server 127.0.0.1:PORT", so match the program.
    redis) [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] ;;
    milvus) [[ "$cmdline" == *"$state/milvus"* ]] ;;
  esac
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
log.dirs=$d/data
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
  # Mirrors kafka-run-class.sh's defaults, with a heap sized for a 2-core development machine.
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

# --- Milvus Lite server --------------------------------------------------------------------------

# The daemon's own Lite server (ingestor/lite.py): Milvus Lite with its per-row float check
# skipped for wire floats and its garbage collection tuned, which several workers can share.
launch_milvus() {
  [ -x "$venv/bin/python" ] || die "$venv/bin/python not found: run deploy/local/bootstrap.sh"
  mkdir -p "$state/milvus"
  PYTHONUNBUFFERED=1 launch milvus "$state/logs/milvus.log" \
    "$venv/bin/python" -m ingestor.lite --data-dir "$state/milvus" --host "$host" --port "$milvus_port"
}

# A real call through pymilvus, not only a TCP connect.
milvus_ready() {
  tcp_open "$milvus_port" || return 1
  timeout 20 "$venv/bin/python" -c "
from pymilvus import MilvusClient
MilvusClient('http://$host:$milvus_port', timeout=10).list_collections()" >/dev/null 2>&1
}

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
    return 0 # ours and alive: answering already, or still starting (ensure_ready waits)
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

milvus_wanted() {
  [ "${INGESTOR_MILVUS_SERVER:-0}" = 1 ] || [ "${1:-}" = --milvus-server ]
}

# --- commands ------------------------------------------------------------------------------------

cmd_up() {
  local services=(kafka redis)
  case "${1:-}" in
    "") ;;
    --milvus-server) ;;
    *) usage ;;
  esac
  milvus_wanted "${1:-}" && services+=(milvus)
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
    for svc in milvus redis kafka; do stop_service "$svc"; done
  fi
  if [ "$wipe" = 1 ]; then
    rm -rf "$state"
    log "wiped $state"
  fi
}

cmd_status() {
  local svc pid port required rc=0 line
  for svc in "${all_services[@]}"; do
    port="$(port_of "$svc")"
    required=1
    # Milvus counts when asked for, or when services.sh started it and it should still be there.
    if [ "$svc" = milvus ] && ! milvus_wanted "${1:-}" && [ ! -f "$(pidfile milvus)" ]; then
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
      [ "$required" = 0 ] && line+="  (optional: up --milvus-server)"
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
