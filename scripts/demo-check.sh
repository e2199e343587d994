#!/usr/bin/env bash
# make demo-check: runs make demo's script without a terminal, then every command it
# printed under "try it", exactly as printed (after its export line), each in a fresh
# shell, and checks each step's outcome against what the demo recorded for it
# (DEMO_DIR/try.tsv). Then it interrupts the demo and checks that it stopped all it
# started and exited 0. Exit status 0 only if everything held.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${DEMO_DIR:-/run/imapgate-demo}
OUT=$(mktemp /tmp/imapgate-demo-check.XXXXXX)
READY=$OUT.ready
trap 'rm -f "$OUT" "$READY"; [ -n "${demo:-}" ] && kill -TERM -- "-$demo" 2>/dev/null; true' EXIT

# Job control gives the demo a process group of its own, as a terminal would, and
# keeps SIGINT from being ignored in it (bash ignores it in background commands).
set -m
DEMO_DIR=$D DEMO_READY=$READY bash "$ROOT/scripts/demo.sh" </dev/null >"$OUT" 2>&1 &
demo=$!
set +m
for _ in $(seq 1 1200); do
  [ -e "$READY" ] && break
  kill -0 "$demo" 2>/dev/null || { cat "$OUT"; echo "demo-check: the demo exited before it was ready" >&2; exit 1; }
  sleep 0.1
done
[ -e "$READY" ] || { cat "$OUT"; echo "demo-check: the demo was not ready within 120 s" >&2; exit 1; }

# The printed block: the export line, then "# N. title" followed by command lines.
exports=$(grep -E '^  export IMAPGATE_CA=' "$OUT" | head -1)
[ -n "$exports" ] || { cat "$OUT"; echo "demo-check: no export line printed" >&2; exit 1; }
failed=0 steps=0
declare -A cmds=()
cur=
while IFS= read -r line; do
  if [[ $line =~ ^\ \ #\ ([0-9]+)\.\  ]]; then cur=${BASH_REMATCH[1]}; continue; fi
  [[ $line =~ ^\ \ # ]] && { cur=; continue; }
  [[ -z $line ]] && { cur=; continue; }
  if [ -n "$cur" ] && [[ $line == "  "* ]]; then cmds[$cur]+="${line#  }"$'\n'; fi
done < <(sed -n '/== all running/,$p' "$OUT")

while IFS=$'\t' read -r n expect; do
  steps=$((steps + 1))
  [ -n "${cmds[$n]:-}" ] || { echo "demo-check: step $n: no command printed" >&2; failed=1; continue; }
  out=$(cd /tmp && bash -c "${exports#  }
${cmds[$n]}" 2>&1) || true
  if grep -Eq -- "$expect" <<<"$out"; then
    echo "demo-check: step $n ok ($expect)"
  else
    echo "demo-check: step $n FAILED: wanted /$expect/; the commands:" >&2
    printf '%s' "${cmds[$n]}" | sed 's/^/    /' >&2
    echo "  printed:" >&2
    printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /' >&2
    failed=1
  fi
done <"$D/try.tsv"
[ "$steps" -ge 5 ] || { echo "demo-check: only $steps steps recorded" >&2; failed=1; }

# Ctrl-C without a terminal: INT to the demo's whole process group, as the terminal
# sends it; the demo must stop everything it started and exit 0.
kill -INT -- "-$demo"
rc=0; wait "$demo" || rc=$?
demo=
[ "$rc" = 0 ] || { tail -n 20 "$OUT"; echo "demo-check: the demo exited $rc after INT (want 0)" >&2; failed=1; }
grep -q 'all stopped' "$OUT" || { echo "demo-check: the demo did not say it stopped everything" >&2; failed=1; }
if pgrep -f "dovecot -F -c $D/" >/dev/null || pgrep -f "$ROOT/bin/(imapgate|demo-backend) " >/dev/null; then
  echo "demo-check: processes of the demo still running after it exited:" >&2
  pgrep -af "$D/|$ROOT/bin/" >&2 || true
  failed=1
fi
if [ "$failed" = 0 ]; then echo "demo-check: all $steps steps as printed, and a clean stop"; fi
exit "$failed"
