#!/usr/bin/env bash
# make demo: the CA on embedded defaults in ./demo, a user certificate issued,
# revoked and checked by OpenSSL against the published CRL; then the CA keeps
# serving until Ctrl-C. DEMO_ONESHOT=1 stops after the walkthrough.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin/imapgate
D=$PWD/demo
API=127.0.0.1:8443
PUB=127.0.0.1:8080
mkdir -p "$D"
cd "$D"

if [ ! -f pw ]; then umask 077; head -c 24 /dev/urandom | base64 > pw; umask 022; fi
if [ ! -f ca/ca.yaml ]; then
  "$BIN" ca init --dir ca --name "Demo Org" --url "https://$API" --public-url "http://$PUB" --http-listen "$PUB" --password-file pw 2>/dev/null
fi

"$BIN" --log-level warn ca serve --dir ca & CA_PID=$!
trap 'kill $CA_PID 2>/dev/null; wait $CA_PID 2>/dev/null || true' EXIT
for i in $(seq 1 100); do curl -fs "http://$PUB/healthz" >/dev/null && break; sleep 0.1; done

export IMAPGATE_CA="https://$API" IMAPGATE_CRED="$D/ca/admin"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -d helpdesk ]; then
  step "an enrollment-agent credential for the help desk PC"
  "$BIN" agent issue --role enroll --name helpdesk-demo --out helpdesk
fi

step "alice's key and CSR (on a smartcard in real life: imapgate token enroll)"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout alice.key \
  -subj "/CN=alice@example.org" -out alice.csr 2>/dev/null
step "the help desk has it signed"
"$BIN" cert sign --cred helpdesk --csr alice.csr --user alice@example.org --out alice.pem
curl -fs "http://$PUB/intermediate.pem" > intermediate.pem
cat ca/root_ca.crt intermediate.pem > chain.pem
openssl verify -CAfile ca/root_ca.crt -untrusted intermediate.pem -purpose sslclient alice.pem

SERIAL=$(openssl x509 -in alice.pem -noout -serial | cut -d= -f2)
step "the admin revokes it ($SERIAL): the card was lost"
"$BIN" cert revoke "$SERIAL" --reason keyCompromise --comment "demo: card lost"
curl -fs "http://$PUB/crl" -o crl.der
openssl crl -inform DER -in crl.der -CAfile chain.pem -verify -noout -text | sed -n '1,/Revoked/p;/Serial Number/,+4p'
openssl crl -inform DER -in crl.der -out crl.pem
step "OpenSSL, as any relying party, now refuses it"
openssl verify -crl_check -CAfile chain.pem -CRLfile crl.pem alice.pem || true
step "issued certificates"
"$BIN" cert list

if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
step "the CA keeps serving: https://$API (API), http://$PUB/crl (CRL). Ctrl-C stops it."
echo "   admin credential: $D/ca/admin   help desk credential: $D/helpdesk"
wait $CA_PID
