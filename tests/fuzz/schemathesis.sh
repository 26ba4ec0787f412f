#!/usr/bin/env bash
# Fuzz the REST API against its own OpenAPI document with Schemathesis.
#
# - creates (or reuses) a virtualenv in target/schemathesis-venv with a pinned
#   Schemathesis;
# - starts target/debug/breadbox (built when missing, or always with
#   SCHEMATHESIS_BUILD=1) on a fresh temporary database, port 0, 127.0.0.1;
# - reads the address it prints and the bootstrap key from bootstrap-key.txt;
# - runs Schemathesis on http://ADDR/openapi.json with the key as X-API-Key.
#
# Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_CHECKS        checks (default: not_a_server_error,
#                              response_schema_conformance,
#                              status_code_conformance,
#                              content_type_conformance)
#   SCHEMATHESIS_PHASES        phases (default examples,coverage,fuzzing,stateful)
#   SCHEMATHESIS_SEED          fixed seed for a reproducible run
#   SCHEMATHESIS_BUILD=1       run `cargo build` even when the binary exists
#   SCHEMATHESIS_KEEP=1        keep the scratch directory (database, server log)
#
# Prints a last line "schemathesis: N passed, M failed" and exits non-zero when
# anything failed. Reports go to target/schemathesis/.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=$ROOT/target/schemathesis-venv
BIN=$ROOT/target/debug/breadbox
REPORTS=$ROOT/target/schemathesis
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance}
PHASES=${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}

SERVER_PID=
WORK=$(mktemp -d "${TMPDIR:-/tmp}/breadbox-fuzz.XXXXXX")
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${SCHEMATHESIS_KEEP:-0}" == 1 ]]; then
        echo "scratch directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

die() {
    echo "schemathesis.sh: $*" >&2
    echo "schemathesis: 0 passed, 1 failed"
    exit 2
}

# ------------------------------------------------------------ virtualenv --
if ! "$VENV/bin/python" -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
        || die "pip install schemathesis failed"
fi

# ---------------------------------------------------------------- server --
if [[ ! -x "$BIN" || "${SCHEMATHESIS_BUILD:-0}" == 1 ]]; then
    echo "== cargo build" >&2
    cargo build --bin breadbox >&2 || die "cargo build failed"
fi

# Rate limits off: Schemathesis sends thousands of requests with one key, and
# many deliberately bad ones.
export BREADBOX_LIMITS_API_PER_MINUTE=0
export BREADBOX_LIMITS_BAD_TOKEN_PER_MINUTE=0
export BREADBOX_LIMITS_BAD_API_KEY_PER_MINUTE=0
export BREADBOX_LOG_LEVEL=${BREADBOX_LOG_LEVEL:-warn}
unset BREADBOX_CONFIG

"$BIN" --database "$WORK/fuzz.db" serve --listen 127.0.0.1:0 >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
for _ in $(seq 1 300); do
    grep -q '^breadbox listening on ' "$WORK/stdout" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "server exited: $(cat "$WORK/stderr")"
    sleep 0.1
done
ADDR=$(sed -n 's#^breadbox listening on http://##p' "$WORK/stdout")
# Off a terminal the first key goes to bootstrap-key.txt beside the database.
KEY=$(grep -m1 -o '^bb_[0-9A-Za-z]*' "$WORK/bootstrap-key.txt" 2>/dev/null || true)
[[ -n "$ADDR" ]] || die "server did not start within 30 s"
[[ -n "$KEY" ]] || die "no bootstrap key printed (database not fresh?)"
echo "== server on http://$ADDR (pid $SERVER_PID)" >&2

# A user, so that generated requests have something real to find.
curl -s -f -X POST "http://$ADDR/api/v1/users" -H "X-API-Key: $KEY" \
    -H 'Content-Type: application/json' -d '{"name":"Fuzz"}' >/dev/null \
    || die "could not create a user"

KEY_IDS=$(curl -s -f "http://$ADDR/api/v1/api-keys" -H "X-API-Key: $KEY" | python3 -c '
import json, sys
keys = json.load(sys.stdin)["api_keys"]
print(",".join(v for k in keys if k["name"] == "bootstrap" for v in (k["id"], k["short_id"])))
') || die "could not list API keys"
export FUZZ_PROTECTED_KEY_IDS=$KEY_IDS

# ----------------------------------------------------------- schemathesis --
# Long-poll: a valid `wait=N` on a live session holds the request N seconds
# (up to 60), which is the documented behaviour but would exceed the request
# timeout and make the run last hours. Valid waits are lowered to 1 second just
# before sending; invalid ones (0, 61, "abc", …) are sent as generated.
cat >"$WORK/hooks.py" <<'PY'
import os
import re

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    q = case.query
    if not isinstance(q, dict) or "wait" not in q:
        return
    v = q["wait"]
    if isinstance(v, bool):
        return
    if isinstance(v, int) or (isinstance(v, str) and re.fullmatch(r"\+?[0-9]{1,18}", v)):
        if 1 < int(v) <= 60:
            q["wait"] = 1


# The run's own API key must survive it: a DELETE /api-keys/{id} that names it
# (e.g. an id taken from a GET /api-keys response) is pointed at an id that
# does not exist instead, or every later request would just get 401.
PROTECTED = set(filter(None, os.environ.get("FUZZ_PROTECTED_KEY_IDS", "").split(",")))


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() != "DELETE" or not case.path.startswith("/api/v1/api-keys/"):
        return
    params = case.path_parameters
    if isinstance(params, dict) and str(params.get("id", "")) in PROTECTED:
        params["id"] = "00000000-0000-4000-8000-000000000000"
PY
export SCHEMATHESIS_HOOKS=$WORK/hooks.py

mkdir -p "$REPORTS"
rm -f "$REPORTS/junit.xml" "$REPORTS/events.ndjson"
args=(
    run "http://$ADDR/openapi.json"
    --header "X-API-Key: $KEY"
    --max-examples "$MAX_EXAMPLES"
    --checks "$CHECKS"
    --phases "$PHASES"
    --workers 1
    --request-timeout 10
    --continue-on-failure
    --report junit,ndjson
    --report-junit-path "$REPORTS/junit.xml"
    --report-ndjson-path "$REPORTS/events.ndjson"
)
[[ -n "${SCHEMATHESIS_SEED:-}" ]] && args+=(--seed "$SCHEMATHESIS_SEED")
echo "== st ${args[*]/$KEY/bb_…}" >&2
set +e
"$VENV/bin/schemathesis" "${args[@]}" 2>&1 | tee "$REPORTS/output.txt"
ST_RC=${PIPESTATUS[0]}
set -e

# The server must still be alive and healthy after the run.
SERVER_OK=1
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis.sh: the server died during the run: $(tail -20 "$WORK/stderr")" >&2
    SERVER_OK=0
elif [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/health/ready") != 200 ]]; then
    echo "schemathesis.sh: the server is not ready after the run" >&2
    SERVER_OK=0
elif [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/api/v1/users" -H "X-API-Key: $KEY") != 200 ]]; then
    echo "schemathesis.sh: the run's API key stopped working during the run (revoked?): results are not trustworthy" >&2
    SERVER_OK=0
fi
cp "$WORK/stderr" "$REPORTS/server.log" 2>/dev/null || true

# Count test cases from the event stream: every ScenarioFinished event holds
# the cases of one scenario and the checks run on each; a case failed when
# one of its checks did. Each NonFatalError (a network error or timeout on a
# case) counts as one failed case too.
COUNTS=$("$VENV/bin/python" - "$REPORTS/events.ndjson" <<'PY'
import json, sys
passed = failed = 0
try:
    lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
except OSError:
    lines = []
for line in lines:
    try:
        ev = json.loads(line)
    except ValueError:
        continue
    if "NonFatalError" in ev:
        failed += 1
        continue
    sf = ev.get("ScenarioFinished")
    if not sf:
        continue
    rec = sf.get("recorder") or {}
    checks = rec.get("checks") or {}
    for case_id in rec.get("cases") or {}:
        if any(str(c.get("status")).lower() == "failure" for c in checks.get(case_id) or []):
            failed += 1
        else:
            passed += 1
print(passed, failed)
PY
) || COUNTS="0 0"
read -r PASSED FAILED <<<"$COUNTS"
if [[ $PASSED == 0 && $FAILED == 0 ]]; then
    echo "schemathesis.sh: could not count test cases in $REPORTS/events.ndjson" >&2
fi
[[ $SERVER_OK == 1 ]] || FAILED=$((FAILED + 1))
# Schemathesis errors (not check failures) also count as a failed run.
if [[ $ST_RC != 0 && $FAILED == 0 ]]; then
    FAILED=1
fi
echo "schemathesis: $PASSED passed, $FAILED failed"
[[ $FAILED == 0 && $ST_RC == 0 ]]
