#!/usr/bin/env bash
# scripts/bench.sh — the outside-in comparison of docs/performance.md: builds imapgate,
# the load generator and the anchors, writes a CA and certificates, starts on 127.0.0.1
# Dovecot (client certificates required, CRL), nginx's mail proxy (ssl_verify_client on,
# auth_http), a bare Go crypto/tls server and the imapgate front, then runs rounds that
# alternate between them and prints a markdown table of medians.
#
# Needs root (Dovecot switches users) and the Debian packages of scripts/deps.sh.
# Environment:
#   BENCH_SECONDS   measured seconds per round (default 5)
#   BENCH_ROUNDS    rounds per cell (default 3; the table shows the median)
#   BENCH_ROWS      rows to run (default: all but ticket4) — full32 full4 ticket32 ticket4 resumed32 resumed4
#                   rsa4 mlkem32 mlkem4 login32 idle (ticket*: full handshakes whose client asks for a
#                   session ticket, as mail programs do);
#                   "none" for the profiles only
#   BENCH_PROTO_ROWS the per-protocol table (default: proto4 protologin8; "none" skips it): a
#                   second front with its IMAP, POP3 and SMTP submission gates side by side,
#                   before Dovecot (IMAP, POP3) and Postfix with Dovecot SASL
#   BENCH_SESSIONS  idle sessions (default 2000)
#   BENCH_IDLE_ROUNDS rounds of the idle row (default BENCH_ROUNDS; each opens every session)
#   BENCH_IDLE_HOLD seconds the idle sessions stay open before the PSS is read (default 12:
#                   the steady state of a server holding idle sessions, for every server)
#   BENCH_PORT_BASE first of fourteen loopback ports (default 19930)
#   BENCH_OUT       directory for configs, logs, JSON and the table (default: a new one in /tmp)
#   BENCH_CRL       1 (default) also times CRL reloads of 100,000 and 1,000,000 entries and of
#                   the 1,000,000 re-signed, and the front's handshake rate, second by
#                   second, while they happen
#   BENCH_PROFILE   1 (default) also takes CPU profiles (2 × BENCH_SECONDS) of the front and
#                   the bare server under full and resumed load, and a perf profile of
#                   the shipped front binary when perf is installed
#   BENCH_SOAK      1 runs the soak last (default 0): BENCH_SOAK_SECONDS (default 600) of
#                   full handshakes at 80 % of the front's measured maximum rate (--rate,
#                   open loop) with logins mixed in (BENCH_SOAK_LOGIN_RATE per second,
#                   default 10); the front's resident memory, goroutines and open files
#                   every 10 s go to soak-samples.tsv, and a summary to the table
# The machine is shared: run it as `nice -n 10 scripts/bench.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole script is one group, read before it runs: editing this file while a long
# benchmark runs cannot change what the running one does.
{

SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
ROWS=${BENCH_ROWS:-"full32 full4 ticket32 resumed32 resumed4 rsa4 mlkem32 mlkem4 login32 idle"}
[ "$ROWS" = none ] && ROWS="" # only the profiles
SESSIONS=${BENCH_SESSIONS:-2000}
P=${BENCH_PORT_BASE:-19930}
PROFILE=${BENCH_PROFILE:-1}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/imapgate-bench.XXXXXX)}
mkdir -p "$OUT"/{bin,pki,res,nginx,dovecot-tls,dovecot-plain}
chmod 755 "$OUT"
OUT=$(cd "$OUT" && pwd)

FRONT_PORT=$P BARE_PORT=$((P + 1)) NGINX_PORT=$((P + 2)) DOVECOT_TLS_PORT=$((P + 3))
BACKEND_PORT=$((P + 4)) PROF_PORT=$((P + 5)) METRICS_PORT=$((P + 6)) BARE_PPROF_PORT=$((P + 7)) PPROF_PORT=$((P + 8)) AUTH_PORT=$((P + 9))
GIMAP_PORT=$((P + 10)) GPOP3_PORT=$((P + 11)) GSMTP_PORT=$((P + 12)) MAILBACKEND_PORT=$((P + 13))
PROTO_ROWS=${BENCH_PROTO_ROWS:-"proto4 protologin8"}
[ "$PROTO_ROWS" = none ] && PROTO_ROWS=""
for port in $(seq "$P" $((P + 13))); do
  if ss -Hltn "sport = :$port" | grep -q .; then
    echo "bench: port $port on 127.0.0.1 is taken: set BENCH_PORT_BASE to a free range of fourteen" >&2
    exit 1
  fi
done
[ "$(id -u)" = 0 ] || { echo "bench: run as root (Dovecot switches to the dovecot and dovenull users)" >&2; exit 1; }
for b in dovecot nginx; do
  command -v "$b" >/dev/null || [ -x /usr/sbin/$b ] || { echo "bench: $b missing: run make deps" >&2; exit 1; }
done
NGINX_MAIL=/usr/lib/nginx/modules/ngx_mail_module.so
[ -f $NGINX_MAIL ] || { echo "bench: $NGINX_MAIL missing: apt-get install libnginx-mod-mail (make deps)" >&2; exit 1; }

echo "bench: building into $OUT/bin"
GO=${GO:-go}
$GO build -o "$OUT/bin/imapgate" ./cmd/imapgate
$GO build -o "$OUT/bin/imapgate-load" ./cmd/imapgate-load
for t in baretls authhttp pki frontprof benchtable profsum crlreload; do $GO build -o "$OUT/bin/$t" ./bench/$t; done
$GO build -o "$OUT/bin/demo-backend" ./testenv/cmd/demo-backend
B=$OUT/bin K=$OUT/pki

"$B/pki" --dir "$K" --revoked "${BENCH_CRL_ENTRIES:-1000}"
USER_NAME=alice@example.org USER_PASS=alice-secret

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- Dovecot: one instance with client certificates required (the "Dovecot" column),
# one plain backend for the front and nginx. Both in Dovecot's high-performance login
# mode (service_count = 0, a login process per core kept ready), which its manual
# recommends for speed, with limits raised for thousands of sessions.
uid=$(id -u dovecot) gid=$(id -g dovecot)
dovecot_conf() { # dir port ssl-settings listener-ssl
  local d=$1
  mkdir -p "$d"/{run,state} "$d/mail/$USER_NAME"/{cur,new,tmp}
  chown -R "$uid:$gid" "$d/mail"
  echo "$USER_NAME:{PLAIN}$USER_PASS::::::" > "$d/passwd"
  cat > "$d/dovecot.conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $d/run
state_dir = $d/state
instance_name = imapgate-bench-$2
log_path = $d/dovecot.log
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:$d/mail/%u
mail_max_userip_connections = 100000
passdb {
  driver = passwd-file
  args = scheme=PLAIN $d/passwd
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$d/mail/%u
}
default_process_limit = 100
default_client_limit = 10000
default_vsz_limit = 1G
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $2
    ssl = $4
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = $(nproc)
  client_limit = 5000
}
service imap {
  service_count = 0
  process_limit = 64
  client_limit = 200
}
service anvil {
  client_limit = 20000
}
service auth {
  client_limit = 20000
}
service stats {
  inet_listener http {
    port = 0
  }
}
$3
CONF
}
cp "$K/server.crt" "$K/server.key" "$K/root-crl.pem" "$OUT/dovecot-tls/"
dovecot_conf "$OUT/dovecot-tls" $DOVECOT_TLS_PORT "ssl = required
ssl_cert = <$OUT/dovecot-tls/server.crt
ssl_key = <$OUT/dovecot-tls/server.key
ssl_min_protocol = TLSv1.2
ssl_ca = <$OUT/dovecot-tls/root-crl.pem
ssl_require_crl = yes
ssl_verify_client_cert = yes
auth_ssl_require_client_cert = yes" yes
dovecot_conf "$OUT/dovecot-plain" $BACKEND_PORT "ssl = no" no
dovecot -F -c "$OUT/dovecot-tls/dovecot.conf" > "$OUT/dovecot-tls/stdout" 2>&1 &
DOVECOT_PID=$!
PIDS+=($DOVECOT_PID)
dovecot -F -c "$OUT/dovecot-plain/dovecot.conf" > "$OUT/dovecot-plain/stdout" 2>&1 &
PIDS+=($!)

# --- nginx mail proxy: settings from the ngx_mail_ssl_module manual ("to reduce the
# processor load": a worker per core, the shared session cache only, a longer session
# lifetime), client certificates verified against the root and the CRL, and an
# auth_http responder that checks the verified subject and the password.
"$B/authhttp" --listen 127.0.0.1:$AUTH_PORT --backend 127.0.0.1:$BACKEND_PORT \
  --users "$USER_NAME:$USER_PASS" > "$OUT/authhttp.log" 2>&1 &
PIDS+=($!)
cat > "$OUT/nginx/nginx.conf" <<CONF
load_module $NGINX_MAIL;
worker_processes auto;
worker_rlimit_nofile 20000;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
events {
  worker_connections 10000;
}
mail {
  server_name localhost;
  auth_http 127.0.0.1:$AUTH_PORT/auth;
  proxy_pass_error_message on;
  imap_capabilities IMAP4rev1 SASL-IR ID LITERAL+;
  imap_auth plain login;
  ssl_certificate $K/server.crt;
  ssl_certificate_key $K/server.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:MAIL:10m;
  ssl_session_timeout 1h;
  ssl_verify_client on;
  ssl_client_certificate $K/root.crt;
  ssl_crl $K/crl.pem;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    protocol imap;
  }
}
CONF
start_nginx() {
  nginx -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g 'daemon off;' >> "$OUT/nginx/stdout" 2>&1 &
  NGINX_PID=$!
  PIDS+=($NGINX_PID)
}
start_nginx

# --- the bare Go anchor.
"$B/baretls" --listen 127.0.0.1:$BARE_PORT --cert "$K/server.crt" --key "$K/server.key" \
  --client-ca "$K/root.crt" --crl "$K/crl.der" --pprof 127.0.0.1:$BARE_PPROF_PORT > "$OUT/baretls.log" 2>&1 &
BARE_PID=$!
PIDS+=($BARE_PID)

# --- the imapgate front: defaults of docs/front.md except the per-address limits,
# which would otherwise stop one load generator on one address.
front_conf() { # listen
  cat <<CONF
listen: "127.0.0.1:$1"
crl_state_file: $K/front-crl-state-$1.json
tls:
  cert_file: $K/server.crt
  key_file: $K/server.key
  client_ca_file: $K/root.crt
crl:
  - file: $K/crl.der
    issuer_file: $K/root.crt
backend:
  address: 127.0.0.1:$BACKEND_PORT
limits:
  max_connections: 100000
  max_connections_per_ip: 100000
  handshakes_per_ip_per_minute: 100000000
CONF
}
front_conf $FRONT_PORT > "$OUT/front.yaml"
# The soak reads the front's goroutines from its own metrics.
echo "metrics_listen: 127.0.0.1:$METRICS_PORT" >> "$OUT/front.yaml"
start_front() {
  "$B/imapgate" front --config "$OUT/front.yaml" >> "$OUT/front.log" 2>&1 &
  FRONT_PID=$!
  PIDS+=($FRONT_PID)
}
start_front

wait_port() { # port name
  for _ in $(seq 1 300); do
    if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
    sleep 0.1
  done
  echo "bench: $2 did not listen on 127.0.0.1:$1; its log is in $OUT" >&2
  exit 1
}
wait_port $DOVECOT_TLS_PORT dovecot; wait_port $BACKEND_PORT "backend dovecot"
wait_port $NGINX_PORT nginx; wait_port $BARE_PORT baretls; wait_port $FRONT_PORT "imapgate front"

declare -A PORT=([dovecot]=$DOVECOT_TLS_PORT [nginx]=$NGINX_PORT [bare]=$BARE_PORT [front]=$FRONT_PORT)
load() { # server out-file args…
  local s=$1 f=$2
  shift 2
  # The server's CPU time per operation (all its processes) goes into the JSON too.
  local cpu=()
  case $s in
    dovecot) cpu=(--pid "$DOVECOT_PID" --children) ;;
    nginx) cpu=(--pid "$NGINX_PID" --children) ;;
    bare) cpu=(--pid "$BARE_PID") ;;
    front) cpu=(--pid "$FRONT_PID") ;;
  esac
  case " $* " in *" --pid "*) cpu=() ;; esac
  "$B/imapgate-load" --addr 127.0.0.1:${PORT[$s]} --ca "$K/root.crt" --duration "${SECS}s" \
    --label "$s" --out "$f" "${cpu[@]}" "$@" > /dev/null || echo "bench: $s: load generator failed (see above)" >&2
}
EC=(--cert "$K/client-ec.crt" --key "$K/client-ec.key")
RSA=(--cert "$K/client-rsa.crt" --key "$K/client-rsa.key")
LOGIN=(--user "$USER_NAME" --password "$USER_PASS")

declare -A TITLE=(
  [full32]="handshake + greeting, 32 at once"
  [full4]="handshake + greeting, 4 at once"
  [ticket32]="handshake + greeting, ticket asked for, 32 at once"
  [ticket4]="handshake + greeting, ticket asked for, 4 at once"
  [resumed32]="resumed (TLS 1.3 tickets), 32 at once"
  [resumed4]="resumed (TLS 1.3 tickets), 4 at once"
  [rsa4]="RSA-2048 client cert, 4 at once"
  [mlkem32]="X25519MLKEM768, 32 at once"
  [mlkem4]="X25519MLKEM768, 4 at once"
  [login32]="LOGIN+LOGOUT through Dovecot, 32 at once (logins/s, p99 to OK)"
  [idle]="PSS per idle session in IDLE ($SESSIONS sessions)"
)
# OpenSSL 3.0 (Debian 12) has no ML-KEM: nginx and Dovecot cannot take X25519MLKEM768.
mlkem_servers="bare front"
if openssl list -kem-algorithms 2>/dev/null | grep -qi mlkem; then mlkem_servers="dovecot nginx bare front"; fi

row_servers() {
  case $1 in
    mlkem*) echo "$mlkem_servers" ;;
    login32) echo "dovecot nginx front" ;;
    idle) echo "nginx front" ;;
    *) echo "dovecot nginx bare front" ;;
  esac
}
row_args() {
  case $1 in
    full32) echo "--mode full --concurrency 32 --curve X25519 EC" ;;
    full4) echo "--mode full --concurrency 4 --curve X25519 EC" ;;
    ticket32) echo "--mode full --tickets --concurrency 32 --curve X25519 EC" ;;
    ticket4) echo "--mode full --tickets --concurrency 4 --curve X25519 EC" ;;
    resumed32) echo "--mode resumed --concurrency 32 --curve X25519 EC" ;;
    resumed4) echo "--mode resumed --concurrency 4 --curve X25519 EC" ;;
    rsa4) echo "--mode full --concurrency 4 --curve X25519 RSA" ;;
    mlkem32) echo "--mode full --concurrency 32 --curve X25519MLKEM768 EC" ;;
    mlkem4) echo "--mode full --concurrency 4 --curve X25519MLKEM768 EC" ;;
    login32) echo "--mode login --concurrency 32 --curve X25519 EC LOGIN" ;;
  esac
}

echo "bench: rows [$ROWS], $ROUNDS rounds of ${SECS}s, servers alternating; results in $OUT/res"
rowspec=""
for row in $ROWS; do
  rowspec+="${rowspec:+;}$row=${TITLE[$row]}"
  rounds=$ROUNDS
  if [ "$row" = idle ]; then rounds=${BENCH_IDLE_ROUNDS:-$ROUNDS}; fi
  for r in $(seq 1 "$rounds"); do
    for s in $(row_servers "$row"); do
      f=$OUT/res/$row.$s.$r.json
      if [ "$row" = idle ]; then
        # A fresh process each round: neither Go nor nginx gives freed memory back at
        # once, so a second round in the same process would measure almost nothing.
        if [ "$s" = nginx ]; then
          kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true
          start_nginx; wait_port $NGINX_PORT nginx; sleep 1
          pidargs=(--pid "$NGINX_PID" --children)
        else
          kill "$FRONT_PID"; wait "$FRONT_PID" 2>/dev/null || true
          start_front; wait_port $FRONT_PORT "imapgate front"; sleep 1
          pidargs=(--pid "$FRONT_PID")
        fi
        load "$s" "$f" --mode idle --sessions "$SESSIONS" --concurrency 16 --hold "${BENCH_IDLE_HOLD:-12}s" "${EC[@]}" "${LOGIN[@]}" "${pidargs[@]}"
      else
        args=()
        for a in $(row_args "$row"); do
          case $a in EC) args+=("${EC[@]}") ;; RSA) args+=("${RSA[@]}") ;; LOGIN) args+=("${LOGIN[@]}") ;; *) args+=("$a") ;; esac
        done
        load "$s" "$f" "${args[@]}"
      fi
      printf '  %-9s %-8s round %d: %s\n' "$row" "$s" "$r" \
        "$(grep -m1 -o '"ops_per_s": [0-9.]*' "$f" 2>/dev/null || echo failed) $(grep -m1 -o '"errors": [0-9]*' "$f" 2>/dev/null)"
    done
  done
done

[ -n "$rowspec" ] && {
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r);"
  echo "$ROUNDS alternating rounds of ${SECS} s per cell (idle: ${BENCH_IDLE_ROUNDS:-$ROUNDS} rounds), median shown, the front's ratios are medians of per-round ratios (lowest–highest); TLS 1.3, X25519 and an EC P-256 client certificate unless the row says otherwise;"
  echo "Go $($GO env GOVERSION), $(nginx -v 2>&1 | cut -d' ' -f3), Dovecot $(dovecot --version | cut -d' ' -f1), $(openssl version | cut -d' ' -f1-2)."
  echo
  "$B/benchtable" --dir "$OUT/res" --rows "$rowspec"
} | tee "$OUT/table.md"

if [ -n "$PROTO_ROWS" ]; then
  # Issue 12's per-protocol figures: one more front, its IMAP, POP3 and SMTP
  # submission gates on three ports, before testenv's mail backend (Dovecot IMAP and
  # POP3, Postfix submission authenticating through Dovecot SASL); rounds alternate
  # between the gates as above.
  rm -f "$OUT/mailbackend.ready"
  "$B/demo-backend" -dir "$OUT/mailbackend" -addr 127.0.0.1:$MAILBACKEND_PORT -pop3 -submission -many \
    -ready "$OUT/mailbackend.ready" > "$OUT/mailbackend.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do [ -s "$OUT/mailbackend.ready" ] && break; sleep 0.1; done
  [ -s "$OUT/mailbackend.ready" ] || { echo "bench: the mail backend did not start; $OUT/mailbackend.log:" >&2; tail -20 "$OUT/mailbackend.log" >&2; exit 1; }
  pop3_backend=$(awk '$1 == "pop3" {print $2}' "$OUT/mailbackend.ready")
  smtp_backend=$(awk '$1 == "smtp" {print $2}' "$OUT/mailbackend.ready")
  { front_conf $GIMAP_PORT | sed "s/127.0.0.1:$BACKEND_PORT/127.0.0.1:$MAILBACKEND_PORT/"
    cat <<CONF
pop3:
  listen: "127.0.0.1:$GPOP3_PORT"
  backend:
    address: "$pop3_backend"
smtp:
  listen: "127.0.0.1:$GSMTP_PORT"
  backend:
    address: "$smtp_backend"
CONF
  } > "$OUT/gates.yaml"
  "$B/imapgate" front --config "$OUT/gates.yaml" > "$OUT/gates.log" 2>&1 &
  GATES_PID=$!
  PIDS+=($GATES_PID)
  wait_port $GIMAP_PORT "gates (imap)"; wait_port $GPOP3_PORT "gates (pop3)"; wait_port $GSMTP_PORT "gates (smtp)"
  PORT[gimap]=$GIMAP_PORT PORT[gpop3]=$GPOP3_PORT PORT[gsmtp]=$GSMTP_PORT
  declare -A PTITLE=(
    [proto4]="handshake + greeting, 4 at once"
    [protologin8]="login + logout through the backend, 8 at once (logins/s, p99 to OK)"
  )
  protospec=""
  for row in $PROTO_ROWS; do
    protospec+="${protospec:+;}$row=${PTITLE[$row]}"
    for r in $(seq 1 "$ROUNDS"); do
      for s in gimap gpop3 gsmtp; do
        f=$OUT/res/$row.$s.$r.json
        args=(--proto "${s#g}" --curve X25519 "${EC[@]}" --pid "$GATES_PID")
        case $row in
          proto4) args+=(--mode full --concurrency 4) ;;
          protologin8) args+=(--mode login --concurrency 8 "${LOGIN[@]}") ;;
        esac
        load "$s" "$f" "${args[@]}"
        printf '  %-11s %-6s round %d: %s\n' "$row" "$s" "$r" \
          "$(grep -m1 -o '"ops_per_s": [0-9.]*' "$f" 2>/dev/null || echo failed) $(grep -m1 -o '"errors": [0-9]*' "$f" 2>/dev/null)"
      done
    done
  done
  {
    echo
    echo "Per protocol: one front process with three gates (ratios against its IMAP gate, round by round); its backends are Dovecot 2.3 (IMAP, POP3) and Postfix $(postconf -h mail_version 2>/dev/null) submission with Dovecot SASL."
    echo
    "$B/benchtable" --dir "$OUT/res" --rows "$protospec" --servers "gimap=IMAP gate;gpop3=POP3 gate;gsmtp=SMTP submission gate" --against gimap
  } | tee -a "$OUT/table.md"
fi
if [ "$PROFILE" = 1 ]; then
  # The shipped front has no profiling endpoint: frontprof is the same mtls.Run with
  # net/http/pprof on loopback, on its own port. Both it and the bare server are
  # profiled under full and resumed handshakes, 32 at once, one after the other, and
  # summarised by profsum.
  front_conf $PROF_PORT > "$OUT/frontprof.yaml"
  "$B/frontprof" --config "$OUT/frontprof.yaml" --pprof 127.0.0.1:$PPROF_PORT > "$OUT/frontprof.log" 2>&1 &
  PIDS+=($!)
  wait_port $PROF_PORT frontprof
  PORT[prof]=$PROF_PORT
  psecs=$((SECS * 2))
  for target in prof:$PPROF_PORT:frontprof:full bare:$BARE_PPROF_PORT:baretls:full \
    prof:$PPROF_PORT:frontprof:resumed bare:$BARE_PPROF_PORT:baretls:resumed; do
    IFS=: read -r s pport bin mode <<<"$target"
    name=$bin.$mode
    load "$s" "$OUT/res/profile-load.$name.json" --mode "$mode" --concurrency 32 --curve X25519 "${EC[@]}" --duration "$((psecs + 2))s" &
    lpid=$!
    sleep 1
    curl -s -o "$OUT/$name.allocs0.pprof" "http://127.0.0.1:$pport/debug/pprof/allocs"
    curl -s -o "$OUT/$name.cpu.pprof" "http://127.0.0.1:$pport/debug/pprof/profile?seconds=$psecs"
    curl -s -o "$OUT/$name.allocs1.pprof" "http://127.0.0.1:$pport/debug/pprof/allocs"
    wait $lpid
    # Allocations during the CPU profile's window (the difference of two heap profiles).
    $GO tool pprof -sample_index=alloc_space -top -nodecount=40 -base "$OUT/$name.allocs0.pprof" "$B/$bin" "$OUT/$name.allocs1.pprof" > "$OUT/$name.alloc_space.txt" 2>&1 || true
    $GO tool pprof -sample_index=alloc_objects -top -nodecount=40 -base "$OUT/$name.allocs0.pprof" "$B/$bin" "$OUT/$name.allocs1.pprof" > "$OUT/$name.alloc_objects.txt" 2>&1 || true
    $GO tool pprof -top -nodecount=40 "$B/$bin" "$OUT/$name.cpu.pprof" > "$OUT/$name.cpu.top.txt" 2>&1 || true
    $GO tool pprof -top -cum -nodecount=80 "$B/$bin" "$OUT/$name.cpu.pprof" > "$OUT/$name.cpu.cum.txt" 2>&1 || true
    $GO tool pprof -traces "$B/$bin" "$OUT/$name.cpu.pprof" 2>/dev/null | "$B/profsum" --name "$bin ($mode)" > "$OUT/$name.cpu.summary.md" || true
    echo "bench: CPU profile of $bin under $mode handshakes, 32 at once: $OUT/$name.cpu.pprof, summary:"
    cat "$OUT/$name.cpu.summary.md"
  done
fi
if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
  # The shipped binary itself, sampled by the kernel (no pprof in it): the share of
  # CPU in crypto symbols, as a check on frontprof's figures.
  load front "$OUT/res/perf-load.json" --mode full --concurrency 32 --curve X25519 "${EC[@]}" --duration "$((SECS * 2 + 2))s" &
  lpid=$!
  sleep 1
  perf record -q -F 999 -o "$OUT/front.perf.data" -p "$FRONT_PID" -- sleep $((SECS * 2)) 2>/dev/null || true
  wait $lpid
  perf report -q -i "$OUT/front.perf.data" --no-children --sort sym --stdio 2>/dev/null | grep '%' > "$OUT/front.perf.txt" || true
  awk '{p=$1; sub("%","",p); t+=p; if ($3 ~ /^(crypto\/|p256|_p256|vendor\/golang.org\/x\/crypto)/ && $3 !~ /^crypto\/(tls|x509)/) c+=p}
       END {printf "bench: perf on imapgate front (full, 32 at once): crypto symbols %.1f %% of %.1f %% sampled, everything else %.1f %%\n", c, t, t-c}' \
    "$OUT/front.perf.txt" | tee "$OUT/front.perf.summary.txt"
fi
if [ "${BENCH_CRL:-1}" = 1 ]; then
  # CRL reloads: the time to load (read, verify, index) CRLs of 100,000 and 1,000,000
  # entries with the front's own code, and a CRL of the 1,000,000 entries re-signed (new
  # number, dates and signature: what the CA publishes on its schedule); then the front's
  # handshake rate in 1 s buckets while its CRL file is replaced by each in turn (it
  # re-reads the file every 5 s). The files are copied next to the front's before the
  # load starts and put in place by a rename, as a CA's publisher does: a 35 MB copy in
  # the window would be the script's CPU, not the front's.
  cp "$K/crl.der" "$OUT/crl-1000.der"
  "$B/pki" --dir "$K" --crl-only "$OUT/crl-100k.der" --revoked 100000
  "$B/pki" --dir "$K" --crl-only "$OUT/crl-1m.der" --revoked 1000000
  "$B/pki" --dir "$K" --crl-only "$OUT/crl-1m-resigned.der" --resign "$OUT/crl-1m.der"
  { echo "| CRL | median load (of 3) | slowest |"; echo "| --- | --- | --- |"
    "$B/crlreload" --issuer "$K/root.crt" --resigned "$OUT/crl-1m-resigned.der" "$OUT/crl-100k.der" "$OUT/crl-1m.der"; } | tee "$OUT/crl-reload.md"
  for f in 100k 1m 1m-resigned; do cp "$OUT/crl-$f.der" "$K/crl-$f.tmp"; done
  sync
  load front "$OUT/res/crl-reload.json" --mode full --concurrency 32 --curve X25519 "${EC[@]}" --duration "$((SECS * 11))s" &
  lpid=$!
  sleep "$SECS"; mv "$K/crl-100k.tmp" "$K/crl.der"; t100k=$(date -u +%T)
  sleep $((SECS * 3)); mv "$K/crl-1m.tmp" "$K/crl.der"; t1m=$(date -u +%T)
  sleep $((SECS * 3)); mv "$K/crl-1m-resigned.tmp" "$K/crl.der"; tre=$(date -u +%T)
  wait $lpid
  echo "bench: CRL files replaced at $t100k (100k), $t1m (1M) and $tre (1M re-signed); the front's log:"
  grep '"crl loaded"' "$OUT/front.log" | tail -3 | cut -c1-280
  echo "bench: handshakes per second during the reloads, 32 at once, in the buckets the front's 'crl loaded' lines fall in:"
  "$B/crlreload" --buckets "$OUT/res/crl-reload.json" --log "$OUT/front.log" | tee "$OUT/crl-reload-buckets.md"
  tr -d '\n ' < "$OUT/res/crl-reload.json" | grep -o '"per_second":\[[0-9,]*\]' | tee "$OUT/crl-reload-buckets.txt"
  cp "$OUT/crl-1000.der" "$K/crl.der"
fi
if [ "${BENCH_SOAK:-0}" = 1 ]; then
  # Target 8: the maximum first (a short full-handshake run, 32 at once), then
  # BENCH_SOAK_SECONDS at 80 % of it with logins beside, sampling the front from
  # outside: RSS and open files from /proc, goroutines from its metrics.
  SOAK=${BENCH_SOAK_SECONDS:-600} LRATE=${BENCH_SOAK_LOGIN_RATE:-10}
  load front "$OUT/res/soak-max.json" --mode full --concurrency 32 --curve X25519 "${EC[@]}"
  max=$(grep -m1 -o '"ops_per_s": [0-9.]*' "$OUT/res/soak-max.json" | grep -o '[0-9.]*$')
  rate=$(awk -v m="$max" 'BEGIN {printf "%.0f", m * 0.8}')
  goroutines() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '$1 == "go_goroutines" {print $2}'; }
  sleep 5
  base_g=$(goroutines)
  echo "bench: soak ${SOAK}s at $rate handshakes/s (80 % of $max) + $LRATE logins/s; front goroutines before: $base_g"
  printf 't_s\trss_kib\tgoroutines\tfds\n' > "$OUT/soak-samples.tsv"
  load front "$OUT/res/soak-full.json" --mode full --concurrency 64 --rate "$rate" --curve X25519 "${EC[@]}" --duration "${SOAK}s" &
  fpid=$!
  load front "$OUT/res/soak-login.json" --mode login --concurrency 8 --rate "$LRATE" --curve X25519 "${EC[@]}" "${LOGIN[@]}" --duration "${SOAK}s" --pid "$FRONT_PID" &
  lpid=$!
  t0=$(date +%s)
  while kill -0 $fpid 2>/dev/null; do
    printf '%d\t%d\t%s\t%d\n' $(($(date +%s) - t0)) "$(awk '/^VmRSS/ {print $2}' /proc/$FRONT_PID/status)" \
      "$(goroutines)" "$(ls /proc/$FRONT_PID/fd | wc -l)" >> "$OUT/soak-samples.tsv"
    sleep 10
  done
  wait $fpid $lpid || true
  sleep 10 # sessions' lingering closes and timers end
  after_g=$(goroutines)
  {
    echo
    echo "Soak, $(date -u '+%Y-%m-%d'): ${SOAK} s of full handshakes at --rate $rate (80 % of the $max/s measured just before, 32 at once) and $LRATE logins/s beside, on the front."
    echo
    awk -F'\t' 'NR > 1 && $1 >= 60 {n++; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2}
      END {if (n) printf "Resident memory after the first minute: %d–%d KiB (%.1f %% spread); ", min, max, 100 * (max - min) / min}' "$OUT/soak-samples.tsv"
    echo "goroutines before $base_g, 10 s after $after_g."
    for f in soak-full soak-login; do
      printf -- '- %s: %s ops at %s/s, errors %s, missed %s, p99 %s ms\n' "$f" \
        "$(grep -m1 -o '"ops": [0-9]*' "$OUT/res/$f.json" | grep -o '[0-9]*$')" \
        "$(grep -m1 -o '"ops_per_s": [0-9.]*' "$OUT/res/$f.json" | grep -o '[0-9.]*$')" \
        "$(grep -m1 -o '"errors": [0-9]*' "$OUT/res/$f.json" | grep -o '[0-9]*$')" \
        "$(grep -m1 -o '"missed": [0-9]*' "$OUT/res/$f.json" | grep -o '[0-9]*$' || echo 0)" \
        "$(tr -d '\n ' < "$OUT/res/$f.json" | grep -o '"greeting_ms":{[^}]*}' | grep -o '"p99":[0-9.]*' | cut -d: -f2)"
    done
  } | tee -a "$OUT/table.md"
fi
echo "bench: table in $OUT/table.md"
exit
}
