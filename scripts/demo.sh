#!/usr/bin/env bash
# make demo: imapgate end to end on embedded defaults, everything on 127.0.0.1, in ./demo:
#   the CA (bbolt) → a help desk credential → alice's key generated on a smartcard
#   (SoftHSM2) and her certificate written beside it → Dovecot as the mail server →
#   the mTLS front → curl reads alice's INBOX through the front with the card's key →
#   wrong identity refused → the admin revokes → the front refuses the card.
# Then everything keeps running until Ctrl-C. DEMO_ONESHOT=1 stops after the walkthrough.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/imapgate
D=$ROOT/demo
API=127.0.0.1:8443     # CA API (HTTPS)
PUB=127.0.0.1:8080     # CA public paths: /crl, /roots.pem (HTTP)
IMAP=127.0.0.1:10143   # Dovecot, internal
FRONT=127.0.0.1:9993   # the front: IMAPS with client certificates
METRICS=127.0.0.1:9994
MODULE=/usr/lib/softhsm/libsofthsm2.so

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 150); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "demo: $1 did not come up" >&2; exit 1; }
wait_tcp() { for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; sleep 0.1; done; echo "demo: $1 did not come up" >&2; exit 1; }

# Each run starts clean: a demo is for watching, not for keeping.
rm -rf "$D"; mkdir -p "$D"; cd "$D"
umask 077

step "the CA: root, intermediate (keys encrypted), TLS certificate, first admin credential"
head -c 24 /dev/urandom | base64 > ca-password
"$BIN" ca init --dir ca --name "Demo Org" --url "https://$API" --public-url "http://$PUB" \
  --http-listen "$PUB" --password-file ca-password 2>/dev/null
"$BIN" --log-level warn ca serve --dir ca 2>ca.log & pids+=($!)
wait_http "http://$PUB/healthz"
export IMAPGATE_CA="https://$API"
curl -fs "http://$PUB/intermediate.pem" > intermediate.pem

step "the help desk PC gets an enrollment-agent credential (its key is made here, never sent)"
"$BIN" agent issue --cred ca/admin --role enroll --name helpdesk-demo --out helpdesk

step "alice's smartcard (SoftHSM2 stands in for it): key generated ON the card, certificate written beside it"
mkdir -p softhsm/tokens
printf 'directories.tokendir = %s/softhsm/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$D" > softhsm/softhsm2.conf
export SOFTHSM2_CONF=$D/softhsm/softhsm2.conf
softhsm2-util --init-token --free --label alice-card --so-pin 12345678 --pin 123456 >/dev/null
echo 123456 > alice-pin
"$BIN" --log-level warn token enroll --module "$MODULE" --token alice-card --pin-file alice-pin \
  --user alice@example.org --cred helpdesk
pkcs11-tool --module "$MODULE" --token-label alice-card --login --pin 123456 --list-objects --type privkey 2>/dev/null | grep -E 'label|ID|Access'

step "the mail server: Dovecot on $IMAP (internal; it trusts the front)"
(cd "$ROOT" && go build -o bin/demo-backend ./testenv/cmd/demo-backend)
"$ROOT/bin/demo-backend" -dir "$D/dovecot" -addr "$IMAP" > dovecot.out 2>&1 & pids+=($!)
wait_tcp "$IMAP"
echo "   mailboxes: alice@example.org (password alice-secret), bob@example.org (bob-secret)"

step "the front on $FRONT: client certificate from the CA, CRL polled every 2 s, then the password"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout front.key -out front.crt \
  -days 30 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
cat > front.yaml <<EOF
listen: $FRONT
metrics_listen: $METRICS
tls:
  cert_file: $D/front.crt
  key_file: $D/front.key
  client_ca_file: $D/ca/root_ca.crt
crl:
  - url: http://$PUB/crl
    issuer_file: $D/intermediate.pem
    interval: 2s
backend:
  address: $IMAP
EOF
"$BIN" front --config front.yaml 2>front.log & pids+=($!)
wait_http "http://$METRICS/metrics"

card=(--engine pkcs11 --cert-type ENG --cert "pkcs11:token=alice-card;object=imapgate-alice@example.org;type=cert"
      --key-type ENG --key "pkcs11:token=alice-card;object=imapgate-alice@example.org;type=private;pin-value=123456")

step "alice: card + password → her INBOX, through the front (curl with the card's key via PKCS#11)"
curl -s --cacert front.crt "${card[@]}" -u alice@example.org:alice-secret "imaps://$FRONT/INBOX;UID=1" | head -5

step "alice's card with bob's password → refused like a wrong password"
curl -s --cacert front.crt "${card[@]}" -u bob@example.org:bob-secret "imaps://$FRONT/INBOX" -v 2>&1 | grep -E '^< A[0-9]+ NO' || true

step "no card at all → the front says why, then closes"
printf 'a1 logout\r\n' | timeout 5 openssl s_client -quiet -connect "$FRONT" -CAfile front.crt 2>/dev/null | head -2 || true

SERIAL=$("$BIN" cert list --cred ca/admin --user alice@example.org --json | sed -n 's/.*"serial": "\([0-9A-F]*\)".*/\1/p' | head -1)
step "the card is lost: the admin revokes $SERIAL"
"$BIN" cert revoke "$SERIAL" --cred ca/admin --reason keyCompromise --comment "demo: card lost"
sleep 3   # one CRL poll
step "alice's card now → * BYE [ALERT] …revoked"
curl -s --cacert front.crt "${card[@]}" -u alice@example.org:alice-secret "imaps://$FRONT/INBOX" -v 2>&1 | grep -E '^< \* BYE' || true

step "the front's decisions, as fail2ban and a SIEM read them (front.log)"
grep -E '"(login|handshake)"' front.log | tail -4

if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
step "all running: CA https://$API (CRL http://$PUB/crl), Dovecot $IMAP, front imaps://$FRONT, metrics http://$METRICS/metrics"
echo "   credentials: admin $D/ca/admin, help desk $D/helpdesk; SOFTHSM2_CONF=$SOFTHSM2_CONF; Ctrl-C stops everything"
wait
