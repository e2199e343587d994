#!/usr/bin/env bash
# Installs what imapgate's tests and demo need on a Debian machine, only what is missing.
# Run as root (CI and the dev machines are root); elsewhere it prints what to install.
set -euo pipefail

pkgs=(
  gcc libc6-dev            # cgo for github.com/miekg/pkcs11
  openssl curl             # interoperability checks against the CA and the front
  softhsm2 opensc p11-kit gnutls-bin libnss3-tools libengine-pkcs11-openssl  # the smartcard in tests
  libp11-kit-dev           # pkcs11.h for testenv/p11fault, the fault-injecting module in front of SoftHSM2
  dovecot-imapd            # the IMAP backend in tests
  dovecot-pop3d postfix    # the POP3 backend and the submission backend (Dovecot SASL) in tests
  swaks libnet-ssleay-perl libio-socket-ssl-perl  # a real SMTP client (STARTTLS, client certificate) against the SMTP gate
  postgresql               # the shared CA database in tests
  thunderbird              # e2e: the real mail program, headless, driven over Marionette
  chromium                 # the enroll-ui browser tests (chromedp drives it headless)
  nginx libnginx-mod-mail iproute2  # make bench: nginx's mail proxy is an anchor (scripts/bench.sh)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "deps: not root; install these with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package lists may be locked by a boot-time apt run; wait for it rather than fail.
for i in $(seq 1 60); do
  if apt-get update -q >/dev/null 2>&1; then break; fi
  echo "deps: apt-get update failed (lock?), retrying ($i)"; sleep 5
done
# policy-rc.d keeps the packages' own services (dovecot, postgresql) from starting:
# the tests start private instances on 127.0.0.1 themselves.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
