#!/usr/bin/env bash
# make demo: imapgate end to end on 127.0.0.1, state in a runtime directory of its own
# (default /run/imapgate-demo, mode 0755, so the dovecot user can enter it wherever
# the clone lives; secret files inside are 0600):
#   Dovecot as the mail server → imapgate serve (the CA on its embedded database, the
#   mTLS front with a certificate from that CA, the help desk UI) → alice's key
#   generated on a smartcard (SoftHSM2) with her certificate written beside it → curl
#   reads alice's INBOX through the front with the card's key → bob's password on
#   alice's card and a missing card are refused → a second, lost card is revoked and
#   refused.
# Then it prints commands to try (they work when pasted as printed, as root) and keeps
# everything running until Ctrl-C, which stops all it started, waits for it, exits 0.
#
#   DEMO_ONESHOT=1  stop after the walkthrough (no commands, no waiting)
#   DEMO_DIR=PATH   the runtime directory (default /run/imapgate-demo; emptied first)
#   DEMO_READY=FILE touched once the commands are printed (make demo-check uses it)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# Dovecot's imap processes run as the dovecot user and the private Dovecot needs root
# to start them; a user with sudo gets the demo run through it.
if [ "$(id -u)" != 0 ]; then
  echo "demo: Dovecot needs root; running the demo through sudo"
  exec sudo DEMO_ONESHOT="${DEMO_ONESHOT:-}" DEMO_DIR="${DEMO_DIR:-}" DEMO_READY="${DEMO_READY:-}" bash "$0" "$@"
fi

# Ctrl-C must reach this script, not make: on a terminal, run the demo as a job of
# its own (its own process group, given the terminal), so make never sees the
# interrupt and exits with the demo's status (0 after a Ctrl-C).
if [ -t 0 ] && [ -z "${DEMO_JOB:-}" ]; then
  set -m
  DEMO_JOB=1 bash "$0" "$@" &
  fg %1 >/dev/null
  exit $?
fi

BIN=$ROOT/bin/imapgate
BACKEND=$ROOT/bin/demo-backend
D=${DEMO_DIR:-/run/imapgate-demo}
API=127.0.0.1:${DEMO_API_PORT:-8443}      # CA API (HTTPS, role certificates)
PUB=127.0.0.1:${DEMO_PUB_PORT:-8080}      # CA public paths: /crl, /roots.pem (plain HTTP)
IMAP=127.0.0.1:${DEMO_IMAP_PORT:-10143}   # Dovecot, internal
FRONT=127.0.0.1:${DEMO_FRONT_PORT:-9993}  # the front: IMAPS with client certificates
METRICS=127.0.0.1:${DEMO_METRICS_PORT:-9994}
UI=127.0.0.1:${DEMO_UI_PORT:-8088}           # the help desk web UI
MODULE=/usr/lib/softhsm/libsofthsm2.so
for f in "$BIN" "$BACKEND"; do
  [ -x "$f" ] || { echo "demo: $f missing: run make demo (it builds it)" >&2; exit 1; }
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- the processes this script started, and what to show when one fails ---------
pids=() names=() logs=()
start() { # start NAME LOG CMD...: run CMD in the background, its output in LOG
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!) names+=("$name") logs+=("$log")
}
show_log() { # the last lines of a component, on the terminal
  echo "demo: $1 — its last lines ($2):" >&2
  tail -n 25 "$2" 2>/dev/null | sed 's/^/    /' >&2 || true
}
stopped=0
stop_all() { # TERM everything still running, newest first, and wait for each
  [ "$stopped" = 1 ] && return 0
  stopped=1
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
}
interrupted() {
  trap '' INT TERM
  echo; echo "demo: stopping everything it started…"
  stop_all
  echo "demo: all stopped (state left in $D; the next make demo starts afresh)"
  exit 0
}
trap interrupted INT TERM
trap stop_all EXIT
fail() { # fail MESSAGE [NAME LOG]: say what failed, with the component's own last lines
  echo "demo: $1" >&2
  if [ $# -ge 3 ]; then show_log "$2" "$3"; fi
  exit 1
}
alive_or_fail() { # the last started component must still be running
  local i=$((${#pids[@]} - 1))
  kill -0 "${pids[$i]}" 2>/dev/null || { wait "${pids[$i]}" 2>/dev/null || true; fail "${names[$i]} exited" "${names[$i]}" "${logs[$i]}"; }
}
wait_up() { # wait_up http://URL|HOST:PORT: poll until it answers; the last component's log if not
  local i=$((${#pids[@]} - 1)) n
  for n in $(seq 1 200); do
    alive_or_fail
    case $1 in
      http*) curl -fs -o /dev/null "$1" && return 0 ;;
      *) (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0 ;;
    esac
    sleep 0.1
  done
  fail "$1 did not come up within 20 s" "${names[$i]}" "${logs[$i]}"
}
quiet() { # quiet NAME CMD...: run a short command; on failure show its output
  local name=$1 out; shift
  out=$("$@" 2>&1) || { echo "$out" > "$D/logs/$name.log"; fail "$name failed" "$name" "$D/logs/$name.log"; }
  printf '%s\n' "$out"
}

# --- a fresh runtime directory the dovecot user can enter ------------------------
case $D in /|/run|/tmp|/var/tmp|"$HOME") fail "DEMO_DIR=$D: give a directory of its own" ;; esac
rm -rf "$D"
mkdir -p "$D"
chmod 0755 "$D"
mkdir -m 0755 "$D/logs"
cd "$D"
umask 077   # secrets (password, PINs, keys) stay 0600; Dovecot's tree is opened up by demo-backend

step "the mail server: Dovecot on $IMAP (internal; it trusts the front's address for the client's IP)"
start dovecot "$D/logs/dovecot.log" bash -c 'umask 022; exec "$0" -dir "$1" -addr "$2"' "$BACKEND" "$D/dovecot" "$IMAP"
wait_up "$IMAP"
echo "   mailboxes: alice@example.org (password alice-secret), bob@example.org (bob-secret)"

# SoftHSM2 stands in for the card reader: its tokens are the "smartcards" the help
# desk UI sees and curl uses.
mkdir -p softhsm/tokens
printf 'directories.tokendir = %s/softhsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$D" > softhsm/softhsm2.conf
export SOFTHSM2_CONF=$D/softhsm/softhsm2.conf
# SoftHSM2 reads its tokens when the module is loaded: the cards must exist before
# the gate starts, or its help desk UI shows "No token in the reader". spare-card
# stays blank for the UI's enroll wizard.
for c in alice-card alice-old-card bob-card spare-card; do
  pin=123456
  [ "$c" = bob-card ] && pin=654321
  quiet softhsm softhsm2-util --init-token --free --label "$c" --so-pin 12345678 --pin "$pin" >/dev/null
done
echo "   cards (SoftHSM2 tokens): alice-card, alice-old-card, bob-card, spare-card (blank, for the UI; PIN 123456, SO PIN 12345678)"

step "the gate: imapgate serve — CA (embedded DB), front and help desk UI in one process, all on 127.0.0.1"
echo "   first start: the CA's root, intermediate (keys encrypted), an admin credential, the UI's help desk"
echo "   credential, and the front's certificate issued by its own CA; the front polls the CRL every 2 s"
head -c 24 /dev/urandom | base64 > ca-password
G=$D/gate
start gate "$D/logs/gate.log" "$BIN" serve --dir "$G" --password-file ca-password --name "Demo Org" \
  --ca-url "https://$API" --crl-listen "$PUB" --front-listen "$FRONT" --metrics-listen "$METRICS" \
  --ui-listen "$UI" --backend "$IMAP" --module "$MODULE" --crl-poll 2s
GATE_PID=${pids[-1]}
wait_up "http://$PUB/healthz"
wait_up "http://$METRICS/metrics"
wait_up "http://$UI/login"
UI_URL=$(sed -n 's/^imapgate enroll-ui: open //p' "$D/logs/gate.log" | head -1)
[ -n "$UI_URL" ] || fail "the help desk UI printed no access link" gate "$D/logs/gate.log"
# The UI must see the cards (SoftHSM2 tokens created before the gate started).
curl -s -c ui-cookies -o /dev/null "$UI_URL"
curl -s -b ui-cookies "http://$UI/tokens/fragment" | grep -q spare-card ||
  fail "the help desk UI does not list the cards (SoftHSM2 reads tokens at start)" gate "$D/logs/gate.log"
rm -f ui-cookies
export IMAPGATE_CA="https://$API" IMAPGATE_CRED="$G/admin" PATH="$ROOT/bin:$PATH"
HELPDESK=$G/serve/helpdesk
echo "   CA https://$API, CRL http://$PUB/crl, front imaps://$FRONT, UI http://$UI, metrics http://$METRICS/metrics"

step "alice's smartcard: key generated ON the card, certificate from the CA written beside it (the help desk's credential)"
echo 123456 > alice-pin
echo 654321 > bob-pin
quiet enroll-alice "$BIN" --log-level warn token enroll --module "$MODULE" --token alice-card --pin-file alice-pin \
  --user alice@example.org --cred "$HELPDESK"
ALICE=$("$BIN" cert list --user alice@example.org --json | sed -n 's/.*"serial": "\([0-9A-Fa-f]*\)".*/\1/p' | head -1)
[ -n "$ALICE" ] || fail "alice's certificate is not in the CA's list"

# The commands below are printed exactly as they are run, and work when pasted.
CACERT="--cacert $G/root_ca.crt"
card() { # card USER LABEL PIN: curl's options to use a card's key through PKCS#11
  echo "--engine pkcs11 --cert-type ENG --cert 'pkcs11:token=$2;object=imapgate-$1;type=cert' --key-type ENG --key 'pkcs11:token=$2;object=imapgate-$1;type=private;pin-value=$3'"
}
READ_ALICE="curl -s $CACERT $(card alice@example.org alice-card 123456) -u alice@example.org:alice-secret 'imaps://$FRONT/INBOX;UID=1'"
NOCARD_ALICE="curl -sv $CACERT -u alice@example.org:alice-secret 'imaps://$FRONT/INBOX;UID=1' 2>&1 | grep -E '^< \* (BYE|NO)'"
BOBPW_ALICE="curl -sv $CACERT $(card alice@example.org alice-card 123456) -u bob@example.org:bob-secret 'imaps://$FRONT/INBOX' 2>&1 | grep -E '^< A[0-9]+ NO'"

step "alice: card + password → her INBOX, through the front (curl with the card's key via PKCS#11)"
eval "$READ_ALICE" | head -5

step "alice's card with bob's password → refused like a wrong password"
eval "$BOBPW_ALICE" || true

step "no card at all → the front says why, then closes"
eval "$NOCARD_ALICE" || true

step "alice's old card was lost: enroll it, then the admin revokes it and the front refuses it"
quiet enroll-old "$BIN" --log-level warn token enroll --module "$MODULE" --token alice-old-card --pin-file alice-pin \
  --user alice@example.org --cred "$HELPDESK" >/dev/null
OLD=$("$BIN" cert list --user alice@example.org --json | sed -n 's/.*"serial": "\([0-9A-Fa-f]*\)".*/\1/p' | grep -v "^$ALICE$" | head -1)
"$BIN" cert revoke "$OLD" --reason keyCompromise --comment "demo: card lost"
sleep 3   # one CRL poll
eval "curl -sv $CACERT $(card alice@example.org alice-old-card 123456) -u alice@example.org:alice-secret 'imaps://$FRONT/INBOX' 2>&1" | grep -E '^< \* BYE' || true

step "the front's decisions, as fail2ban and a SIEM read them ($D/logs/gate.log)"
grep -E '"event":"(login|handshake)"' "$D/logs/gate.log" | tail -4

if [ "${DEMO_ONESHOT:-}" = 1 ]; then
  stop_all
  exit 0
fi

# --- what to try: printed as run; make demo-check runs each and checks the outcome -
: > try.tsv
n=0
try() { # try TITLE EXPECT-REGEX COMMAND...: print a numbered step; record it for demo-check
  n=$((n + 1))
  printf '  # %d. %s\n' "$n" "$1"
  local c
  for c in "${@:3}"; do printf '  %s\n' "$c"; done
  printf '\n'
  printf '%d\t%s\n' "$n" "$2" >> try.tsv
}
note() { printf '  # %s\n' "$*"; }

step "all running — try it (as root; paste the export line first)"
echo "  export IMAPGATE_CA=$IMAPGATE_CA IMAPGATE_CRED=$IMAPGATE_CRED SOFTHSM2_CONF=$SOFTHSM2_CONF PATH=$ROOT/bin:\$PATH"
echo
try "alice reads her INBOX: her card (PIN 123456 in the URI) and her password" \
  'Hello alice@example.org, this is message 1' "$READ_ALICE"
try "the same without the card: the front refuses before any password is checked" \
  'BYE' "$NOCARD_ALICE"
try "the help desk UI: open this link in a browser on this machine (the token is the login); the cards are SoftHSM2 tokens" \
  '^(200|30[0-9]) ' \
  "curl -s -o /dev/null -w '%{http_code} %{redirect_url}\\n' '$UI_URL'"
try "enroll bob: his new card (already in the reader), a key generated on it, the CA's certificate written beside it; bob reads his INBOX" \
  'Hello bob@example.org, this is message 1' \
  "imapgate token enroll --module $MODULE --token bob-card --pin-file $D/bob-pin --user bob@example.org --cred $HELPDESK" \
  "curl -s $CACERT $(card bob@example.org bob-card 654321) -u bob@example.org:bob-secret 'imaps://$FRONT/INBOX;UID=1'"
try "the front's metrics (Prometheus text): logins, handshakes, the CRL's age" \
  'imapgate_front_logins_total' \
  "curl -s http://$METRICS/metrics | grep -E '^imapgate_front_(logins_total|handshakes_total|crl_age_seconds)'"
try "alice's card is stolen: revoke it; within one CRL poll (2 s) the front refuses it" \
  'BYE.*revoked' \
  "imapgate cert revoke $ALICE --reason keyCompromise --comment 'card stolen'" \
  "sleep 3; curl -sv $CACERT $(card alice@example.org alice-card 123456) -u alice@example.org:alice-secret 'imaps://$FRONT/INBOX' 2>&1 | grep -E '^< \* BYE'"
try "alice gets a new key and certificate on her (new) card; she reads her INBOX again" \
  'Hello alice@example.org, this is message 1' \
  "imapgate token enroll --module $MODULE --token alice-card --pin-file $D/alice-pin --user alice@example.org --cred $HELPDESK --replace" \
  "$READ_ALICE"
note "all certificates and their status: imapgate cert list"
note "the gate's files: $G (configs in $G/serve; after editing front.yaml: kill -HUP $GATE_PID)"
note "logs: $D/logs/ (gate.log is what fail2ban reads); Ctrl-C stops everything"
echo "  # running: CA https://$API (CRL http://$PUB/crl), Dovecot $IMAP, front imaps://$FRONT, UI http://$UI, metrics http://$METRICS/metrics"

if [ -n "${DEMO_READY:-}" ]; then touch "$DEMO_READY"; fi

# Until Ctrl-C (or TERM): a component that exits on its own is reported with its log.
while :; do
  wait -n "${pids[@]}" && rc=0 || rc=$?
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      fail "${names[$i]} stopped on its own (status $rc)" "${names[$i]}" "${logs[$i]}"
    fi
  done
done
