#!/usr/bin/env bash
# Proof in a real client: the MCP Inspector's CLI mode drives the real `exai-mcp` server over
# stdio, against the bundled fake provider (scripts/fake_provider.py) on 127.0.0.1.
#
#   bash scripts/inspector_check.sh
#
# Checks: tools/list names the tools; tools/call of `analyze` answers from a Kimi model and
# from a GLM model (the fake's answer, "isError": false). Then the same over MCP streamable
# HTTP: `exai-mcp serve --http --port 0` (its port read from its "listening on" line), with
# the Inspector's `--transport http` (0.15.0 has it). Skipped (exit 0) when npx is missing.
set -euo pipefail

# 0.15.0 is the newest Inspector that runs on Node 20 (0.16+ needs Node >= 22.7.5); an
# unpinned `npx -y @modelcontextprotocol/inspector` resolves to it there as well.
INSPECTOR="${INSPECTOR:-@modelcontextprotocol/inspector@0.15.0}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}" # seconds per Inspector run; the first one downloads it

ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v npx >/dev/null 2>&1; then
  echo "inspector_check: npx not found; skipping the MCP Inspector check (install Node.js to run it)"
  exit 0
fi

if command -v uv >/dev/null 2>&1; then # the project's environment, synced if needed
  PYTHON="$(cd "$ROOT" && uv run --quiet python -c 'import sys; print(sys.executable)')"
else
  PYTHON="$ROOT/.venv/bin/python"
fi
SERVER="$(dirname "$PYTHON")/exai-mcp" # the console script users run
WORK="$(mktemp -d)"
FAKE_PID=""
HTTP_PID=""

cleanup() {
  if [[ -n "$HTTP_PID" ]] && kill -0 "$HTTP_PID" 2>/dev/null; then
    kill "$HTTP_PID" 2>/dev/null || true
    wait "$HTTP_PID" 2>/dev/null || true
  fi
  if [[ -n "$FAKE_PID" ]] && kill -0 "$FAKE_PID" 2>/dev/null; then
    kill "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" 2>/dev/null || true
  fi
  [[ -n "${KEEP_WORK:-}" ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The fake provider prints its URL once listening; reading it from the coprocess pipe waits
# for exactly that event. Its stdin is the coprocess pipe too, so it also exits with us.
coproc FAKE { exec "$PYTHON" "$ROOT/scripts/fake_provider.py"; } # sets FAKE_PID
if ! read -r -t 15 URL <&"${FAKE[0]}" || [[ "$URL" != http://127.0.0.1:* ]]; then
  echo "inspector_check: FAILED: the fake provider did not print its URL within 15 s" >&2
  exit 1
fi
echo "inspector_check: fake provider at $URL; server $SERVER; $INSPECTOR"

: >"$WORK/empty.env" # no stray .env (with real keys) reaches the server
# The Inspector passes its child only a few variables: everything else goes with -e.
# Its CLI waits 60 s for a call, so T=20 (client minimum ceil(2.5 x 20) = 50 s) fits.
SERVER_ENV=(
  -e "KIMI_API_KEY=inspector-check-kimi-key"
  -e "KIMI_BASE_URL=$URL/v1"
  -e "GLM_API_KEY=inspector-check-glm-key"
  -e "GLM_BASE_URL=$URL/api/paas/v4"
  -e "EXAI_ENV_FILE=$WORK/empty.env"
  -e "EXAI_STATE_DB=$WORK/state.sqlite3"
  -e "EXAI_ALLOWED_ROOTS=$WORK"
  -e "WORKFLOW_TOOL_TIMEOUT_SECS=20"
  -e "EXAI_CLIENT_TIMEOUT_SECS=60"
)
if [[ -n "${SSL_CERT_FILE:-}" ]]; then SERVER_ENV+=(-e "SSL_CERT_FILE=$SSL_CERT_FILE"); fi

TARGET=("${SERVER_ENV[@]}" -- "$SERVER") # what the Inspector runs (or, later, a URL)
FAILED=0
elapsed() { # seconds since a `date +%s%N` stamp, with two decimals
  local ms=$((($(date +%s%N) - $1) / 1000000))
  printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10))
}
START_ALL=$(date +%s%N)

# inspect NAME EXPECTED... -- INSPECTOR-ARGS...: run one Inspector call; check that the
# output contains every expected string.
inspect() {
  local name="$1"
  shift
  local expected=()
  while [[ "$1" != "--" ]]; do
    expected+=("$1")
    shift
  done
  shift
  local out="$WORK/$name.out" start status=0 missing=()
  start=$(date +%s%N)
  (cd "$WORK" && timeout "$STEP_TIMEOUT" npx -y "$INSPECTOR" --cli "${TARGET[@]}" "$@") \
    >"$out" 2>&1 </dev/null || status=$?
  for want in "${expected[@]}"; do
    grep -qF -- "$want" "$out" || missing+=("$want")
  done
  local took
  took=$(elapsed "$start")
  if [[ $status -eq 0 && ${#missing[@]} -eq 0 ]]; then
    printf 'inspector_check: ok   %-18s %6s s\n' "$name" "$took"
    # What a user would see: the tool names, or the expert's answer.
    sed -n -e 's/^      "name": "\(.*\)",$/    tool: \1/p' \
      -e 's/^    "analysis": \(.*\),$/    analysis: \1/p' "$out"
  else
    printf 'inspector_check: FAIL %-18s %6s s (exit %s; missing: %s)\n' \
      "$name" "$took" "$status" "${missing[*]:-none}"
    sed 's/^/    | /' "$out" | head -60
    FAILED=1
  fi
}

inspect tools-list '"name": "analyze"' '"name": "status"' '"inputSchema"' -- \
  --method tools/list
inspect analyze-kimi '"isError": false' 'Fake expert answer from kimi-k2-0905-preview' \
  '"provider": "kimi"' -- \
  --method tools/call --tool-name analyze --tool-arg "text=Is this design sound?"
inspect analyze-glm '"isError": false' 'Fake expert answer from glm-4.6' '"provider": "glm"' -- \
  --method tools/call --tool-name analyze --tool-arg "text=Is this design sound?" \
  --tool-arg model=glm-4.6

# The same over HTTP: one `serve --http` process; the Inspector connects to its /mcp.
HTTP_ENV=()
for setting in "${SERVER_ENV[@]}"; do [[ "$setting" != "-e" ]] && HTTP_ENV+=("$setting"); done
(cd "$WORK" && exec env "${HTTP_ENV[@]}" EXAI_STATE_DB="$WORK/http-state.sqlite3" \
  "$SERVER" serve --http --host 127.0.0.1 --port 0) 2>"$WORK/http.err" </dev/null &
HTTP_PID=$!
HTTP_URL=""
for _ in $(seq 150); do # up to 15 s for the "listening on http://..." line
  HTTP_URL="$(sed -n 's/^exai-mcp: listening on \(http:[^ ]*\)$/\1/p' "$WORK/http.err" | head -1)"
  [[ -n "$HTTP_URL" ]] && break
  kill -0 "$HTTP_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$HTTP_URL" ]]; then
  echo "inspector_check: FAIL http: exai-mcp serve --http did not say where it listens" >&2
  sed 's/^/    | /' "$WORK/http.err" | tail -20
  FAILED=1
else
  echo "inspector_check: exai-mcp serve --http at $HTTP_URL"
  TARGET=("$HTTP_URL/mcp" --transport http)
  inspect http-tools-list '"name": "analyze"' '"name": "status"' '"inputSchema"' -- \
    --method tools/list
  inspect http-analyze-kimi '"isError": false' 'Fake expert answer from kimi-k2-0905-preview' \
    '"provider": "kimi"' -- \
    --method tools/call --tool-name analyze --tool-arg "text=Is this design sound over HTTP?"
  kill -TERM "$HTTP_PID" 2>/dev/null || true
  status=0
  wait "$HTTP_PID" || status=$?
  HTTP_PID=""
  if [[ $status -eq 0 ]]; then
    echo "inspector_check: ok   http-sigterm       (exit 0)"
  else
    echo "inspector_check: FAIL http-sigterm: exit $status" >&2
    FAILED=1
  fi
fi

TOTAL=$(elapsed "$START_ALL")
if [[ $FAILED -ne 0 ]]; then
  printf 'inspector_check: FAILED (%s s)\n' "$TOTAL" >&2
  exit 1
fi
printf 'inspector_check: passed (%s s)\n' "$TOTAL"
