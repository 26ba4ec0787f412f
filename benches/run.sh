#!/usr/bin/env bash
# Breadbox performance benchmarks: builds the release binary and the raw_insert
# bench, then measures, side by side on this machine and in one run:
#   binary size, exec-to-ready, idle RSS/threads, poll vs /health/live rate,
#   mint vs raw SQLite insert rate, RSS after a mixed load, and 1,000 long-poll
#   waiters (RSS/threads while waiting, all answered after a cancel).
# Prints a table "metric, value, target, result" and writes it to
# target/bench/results.txt (raw tool output goes to target/bench/logs/).
#
# Everything listens on 127.0.0.1 only; every loop is bounded; every process
# this script starts is stopped on exit.
#
# Environment:
#   BENCH_LOAD_SECONDS  mixed-load duration before the RSS reading (default 60)
#   BENCH_WRK_SECONDS   duration of each rate measurement (default 10)
#   BENCH_WAITERS       number of concurrent long-poll waiters (default 1000)
#   BENCH_RATE_ROUNDS   alternating live/poll rounds; the median ratio counts (default 3)
#   BENCH_KEEP=1        keep the scratch directory (databases, server logs)
#   BENCH_SKIP_BUILD=1  use the binaries already built
# Exit status: 0 when every target is met, 1 when one is missed, 2 on error.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
LOAD_SECONDS=${BENCH_LOAD_SECONDS:-60}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
WAITERS=${BENCH_WAITERS:-1000}
RATE_ROUNDS=${BENCH_RATE_ROUNDS:-3}
OUT=$ROOT/target/bench
LOGS=$OUT/logs
BIN=$ROOT/target/release/breadbox
mkdir -p "$OUT" "$LOGS"
# Databases for the server and for raw_insert live side by side on the same
# filesystem (the repo's target/ directory), so fsync costs are comparable.
WORK=$(mktemp -d "$OUT/work.XXXXXX")

# The limiter would otherwise cap the benchmark (1200 requests/min per key).
export BREADBOX_LIMITS_API_PER_MINUTE=0
export BREADBOX_LIMITS_BAD_TOKEN_PER_MINUTE=0
export BREADBOX_LIMITS_BAD_API_KEY_PER_MINUTE=0
export BREADBOX_LOG_LEVEL=warn
unset BREADBOX_CONFIG BREADBOX_SERVER_PUBLIC_URL BREADBOX_DATABASE_SYNCHRONOUS 2>/dev/null || true

cleanup() {
    # Only this shell's own background jobs that are still running (no stale
    # PIDs that the system may have reused).
    local p pids
    pids=$(jobs -pr)
    for p in $pids; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in $pids; do
        for _ in $(seq 1 100); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        echo "scratch directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

die() { echo "run.sh: $*" >&2; exit 2; }
log() { echo "== $*" >&2; }

# 1,000 sockets in the client and the server (the server inherits this).
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[[ $(ulimit -n) == unlimited || $(ulimit -n) -ge $((WAITERS + 200)) ]] \
    || die "open-file limit $(ulimit -n) is too low for $WAITERS waiters"
for tool in wrk curl python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# ---------------------------------------------------------------- results --
ROWS=()
FAILED=0
# row METRIC VALUE TARGET RESULT
row() { ROWS+=("$1|$2|$3|$4"); }
# judge METRIC VALUE OP LIMIT TARGET_TEXT  (OP is le or ge)
judge() {
    local metric=$1 value=$2 op=$3 limit=$4 text=$5 ok
    if [[ -z "$value" || "$value" == n/a ]]; then
        row "$metric" "n/a" "$text" FAIL
        FAILED=1
        return
    fi
    if [[ $op == le ]]; then
        ok=$(awk -v v="$value" -v l="$limit" 'BEGIN { print (v <= l) ? 1 : 0 }')
    else
        ok=$(awk -v v="$value" -v l="$limit" 'BEGIN { print (v >= l) ? 1 : 0 }')
    fi
    if [[ $ok == 1 ]]; then
        row "$metric" "$value" "$text" pass
    else
        row "$metric" "$value" "$text" FAIL
        FAILED=1
    fi
}
info() { row "$1" "$2" "-" info; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# --------------------------------------------------------------- helpers --
status_field() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# start_server NAME: fresh copy of the template database; sets SERVER_PID, ADDR.
start_server() {
    local dir=$WORK/$1
    cp -a "$WORK/template" "$dir"
    "$BIN" --database "$dir/bb.db" serve --listen 127.0.0.1:0 \
        >"$dir/stdout" 2>"$dir/stderr" &
    SERVER_PID=$!
    local _
    for _ in $(seq 1 1000); do
        grep -q '^breadbox listening on ' "$dir/stdout" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "server $1 exited: $(cat "$dir/stderr")"
        sleep 0.01
    done
    ADDR=$(sed -n 's#^breadbox listening on http://##p' "$dir/stdout")
    [[ -n "$ADDR" ]] || die "server $1 did not start within 10 s"
    ! grep -q '^bb_' "$dir/stdout" || die "server $1 printed a bootstrap key: template not used"
    for _ in $(seq 1 200); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/health/ready") == 200 ]] && return 0
        sleep 0.05
    done
    die "server $1 not ready within 10 s"
}

stop_server() {
    local p=$1 _
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 1 200); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

api() { # api METHOD PATH [JSON]
    local args=(-s -f -X "$1" "http://$ADDR/api/v1$2" -H "X-API-Key: $KEY")
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' -d "$3")
    curl "${args[@]}"
}

# make_user_and_session: sets USER_ID, SESSION_ID on the current server.
make_user_and_session() {
    USER_ID=$(api POST /users '{"name":"Bench"}' | json_field id) || die "could not create a user"
    SESSION_ID=$(api POST /connections/link "{\"user_id\":\"$USER_ID\",\"expires_in_seconds\":3600}" \
        | json_field id) || die "could not create a session"
}

# run_wrk NAME ARGS...: runs wrk, keeps its output in logs/NAME.txt, sets
# RPS (requests/s), NON2XX (non-2xx/3xx answers), ERRS (socket errors).
run_wrk() {
    local name=$1
    shift
    # In the background so a TERM/INT reaches the trap at once.
    wrk "$@" >"$LOGS/$name.txt" 2>&1 &
    local pid=$!
    wait "$pid" || die "wrk $name failed: $(cat "$LOGS/$name.txt")"
    RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$LOGS/$name.txt")
    NON2XX=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$LOGS/$name.txt")
    NON2XX=${NON2XX:-0}
    ERRS=$(awk '/Socket errors:/ { s = 0; for (i = 4; i <= NF; i += 2) s += $i; print s }' "$LOGS/$name.txt")
    ERRS=${ERRS:-0}
    [[ -n "$RPS" ]] || die "no Requests/sec in wrk $name output"
    log "$name: $RPS req/s (non-2xx: $NON2XX, socket errors: $ERRS)"
}

# ----------------------------------------------------------------- build --
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release"
    cargo build --release >&2
    log "cargo bench --bench raw_insert --no-run"
    cargo bench --bench raw_insert --no-run >&2
fi
[[ -x "$BIN" ]] || die "$BIN missing"

echo "Server env: BREADBOX_LIMITS_API_PER_MINUTE=0 BREADBOX_LIMITS_BAD_TOKEN_PER_MINUTE=0" \
    "BREADBOX_LIMITS_BAD_API_KEY_PER_MINUTE=0 BREADBOX_LOG_LEVEL=warn (rate limits off so they do not cap the benchmark)"
echo "Machine: $(nproc) cores, $(uname -sr), scratch on $(df -T "$WORK" | awk 'NR==2 { print $2 }')"

SIZE=$(stat -c %s "$BIN")
judge "binary size (MiB, stripped)" "$(awk -v s="$SIZE" 'BEGIN { printf "%.2f", s / 1048576 }')" le 12 "<= 12"

# A database with an API key (so no bootstrap key) and its encryption key
# file, made once; every server below runs on a fresh copy of it.
mkdir -p "$WORK/template"
# Only `serve` creates a database: start it once on the empty template (its
# first key goes to bootstrap-key.txt, removed), then add the bench's key.
"$BIN" --database "$WORK/template/bb.db" serve --listen 127.0.0.1:0 \
    >"$WORK/template.stdout" 2>"$WORK/template.stderr" &
TEMPLATE_PID=$!
for _ in $(seq 1 1000); do
    grep -q '^breadbox listening on ' "$WORK/template.stdout" 2>/dev/null && break
    sleep 0.01
done
stop_server "$TEMPLATE_PID"
rm -f "$WORK/template/bootstrap-key.txt" "$WORK/template/bb.db.lock"
KEY=$("$BIN" --database "$WORK/template/bb.db" --json keys create --name bench --scope full_access \
    | json_field key) || die "could not create the API key"
start_server prime
stop_server "$SERVER_PID"
cp -a "$WORK/prime/bb.db.key" "$WORK/template/" 2>/dev/null || true

# ---------------------------------------------------------- exec-to-ready --
log "exec-to-ready (5 runs)"
cat >"$WORK/ready.py" <<'PY'
import http.client, os, re, select, shutil, statistics, subprocess, sys, time

binary, template, workdir, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times = []
for i in range(runs):
    d = os.path.join(workdir, f"ready{i}")
    shutil.copytree(template, d)
    err = open(os.path.join(d, "stderr"), "wb")
    t0 = time.perf_counter_ns()
    p = subprocess.Popen([binary, "--database", os.path.join(d, "bb.db"), "serve",
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=err)
    try:
        deadline = time.monotonic() + 10
        addr = None
        while addr is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
                sys.exit("server did not print its address within 10 s")
            line = p.stdout.readline()
            if not line:
                sys.exit("server exited before listening")
            if line.startswith(b"bb_"):
                sys.exit("bootstrap key printed: template not used")
            m = re.match(rb"breadbox listening on http://(\S+)", line)
            if m:
                addr = m.group(1).decode()
        host, port = addr.rsplit(":", 1)
        while True:
            try:
                c = http.client.HTTPConnection(host, int(port), timeout=2)
                c.request("GET", "/health/ready")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("not ready within 10 s")
            time.sleep(0.005)
        ms = (time.perf_counter_ns() - t0) / 1e6
        times.append(ms)
        print(f"run {i + 1}: {ms:.1f} ms", file=sys.stderr)
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
print(f"ready_median_ms={statistics.median(times):.1f}")
print(f"ready_min_ms={min(times):.1f}")
print(f"ready_max_ms={max(times):.1f}")
PY
READY_OUT=$(python3 "$WORK/ready.py" "$BIN" "$WORK/template" "$WORK" 5) || die "exec-to-ready failed"
kv() { sed -n "s/^$1=//p" <<<"$2"; }
judge "exec-to-ready median of 5 (ms)" "$(kv ready_median_ms "$READY_OUT")" le 100 "<= 100"
info "exec-to-ready min / max (ms)" "$(kv ready_min_ms "$READY_OUT") / $(kv ready_max_ms "$READY_OUT")"

# --------------------------------------------------------------- idle RSS --
log "idle RSS"
start_server main
MAIN_PID=$SERVER_PID
sleep 2
IDLE_RSS=$(status_field "$MAIN_PID" VmRSS)
IDLE_THREADS=$(status_field "$MAIN_PID" Threads)
judge "idle RSS after 2 s (MiB)" "$(kib_to_mib "$IDLE_RSS")" le 10 "<= 10"
info "idle threads" "$IDLE_THREADS"

# ------------------------------------------------------- poll rate vs live --
make_user_and_session
POLL_SESSION=$SESSION_ID
# Alternating rounds (live, poll, live, poll, …): other load on the machine
# moves both numbers, so the median of the per-round ratios is reported.
RATIOS=()
LIVES=()
POLLS=()
for round in $(seq 1 "$RATE_ROUNDS"); do
    log "round $round/$RATE_ROUNDS: wrk GET /health/live, then GET /api/v1/connections/link/{id}, ${WRK_SECONDS}s each"
    run_wrk "live$round" -t2 -c32 -d"${WRK_SECONDS}s" "http://$ADDR/health/live"
    [[ $NON2XX == 0 && $ERRS == 0 ]] || info "live round $round: non-2xx / socket errors" "$NON2XX / $ERRS"
    LIVES+=("$RPS")
    live=$RPS
    run_wrk "poll$round" -t2 -c32 -d"${WRK_SECONDS}s" -H "X-API-Key: $KEY" \
        "http://$ADDR/api/v1/connections/link/$POLL_SESSION"
    [[ $NON2XX == 0 && $ERRS == 0 ]] || info "poll round $round: non-2xx / socket errors" "$NON2XX / $ERRS"
    POLLS+=("$RPS")
    RATIOS+=("$(div "$RPS" "$live")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
info "GET /health/live (req/s, wrk -t2 -c32, per round)" "${LIVES[*]}"
info "GET /connections/link/{id} (req/s, per round)" "${POLLS[*]}"
info "poll / live per round" "${RATIOS[*]}"
judge "poll / live (median of $RATE_ROUNDS rounds)" "$(median "${RATIOS[@]}")" ge 0.40 ">= 0.40"

# -------------------------------------------------- mint rate vs raw insert --
cat >"$WORK/mint.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"user_id":"$USER_ID"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
LUA
log "wrk: POST /api/v1/connections/link, ${WRK_SECONDS}s"
run_wrk mint -t2 -c32 -d"${WRK_SECONDS}s" -s "$WORK/mint.lua" "http://$ADDR/api/v1/connections/link"
MINT_RPS=$RPS
[[ $NON2XX == 0 && $ERRS == 0 ]] || info "mint: non-2xx / socket errors" "$NON2XX / $ERRS"
log "raw_insert, ${WRK_SECONDS}s"
RAW_OUT=$(cargo bench -q --bench raw_insert -- --seconds "$WRK_SECONDS" --db "$WORK/raw.db" 2>"$LOGS/raw_insert.stderr") \
    || die "raw_insert failed: $(cat "$LOGS/raw_insert.stderr")"
echo "$RAW_OUT" >"$LOGS/raw_insert.txt"
RAW_RPS=$(kv raw_insert_per_sec "$RAW_OUT")
log "raw_insert: $RAW_RPS tx/s"
info "POST /connections/link (mints/s, wrk -t2 -c32)" "$MINT_RPS"
info "raw_insert (tx/s, same pragmas, 1 writer)" "$RAW_RPS"
judge "mint / raw_insert" "$(div "$MINT_RPS" "$RAW_RPS")" ge 0.70 ">= 0.70"

# ------------------------------------------------------ RSS after mixed load --
cat >"$WORK/mixed.lua" <<LUA
-- ~70% polls, ~20% mints, ~10% /health/live
local poll, mint, live
function init(args)
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100003)
    poll = wrk.format("GET", "/api/v1/connections/link/$POLL_SESSION", { ["X-API-Key"] = "$KEY" })
    mint = wrk.format("POST", "/api/v1/connections/link",
        { ["X-API-Key"] = "$KEY", ["Content-Type"] = "application/json" },
        '{"user_id":"$USER_ID"}')
    live = wrk.format("GET", "/health/live")
end
function request()
    local r = math.random(100)
    if r <= 70 then return poll elseif r <= 90 then return mint else return live end
end
LUA
log "wrk: mixed load (70% poll, 20% mint, 10% live), ${LOAD_SECONDS}s"
run_wrk mixed -t2 -c32 -d"${LOAD_SECONDS}s" -s "$WORK/mixed.lua" "http://$ADDR"
MIXED_RPS=$RPS
[[ $NON2XX == 0 && $ERRS == 0 ]] || info "mixed: non-2xx / socket errors" "$NON2XX / $ERRS"
LOAD_RSS=$(status_field "$MAIN_PID" VmRSS)
LOAD_HWM=$(status_field "$MAIN_PID" VmHWM)
LOAD_THREADS=$(status_field "$MAIN_PID" Threads)
info "mixed load (req/s, ${LOAD_SECONDS}s)" "$MIXED_RPS"
judge "RSS after ${LOAD_SECONDS}s mixed load (MiB)" "$(kib_to_mib "$LOAD_RSS")" le 32 "<= 32"
info "peak RSS during load, VmHWM (MiB)" "$(kib_to_mib "$LOAD_HWM")"
info "threads right after load" "$LOAD_THREADS"
sleep 12
info "RSS / threads 12 s after load (MiB / n)" "$(kib_to_mib "$(status_field "$MAIN_PID" VmRSS)") / $(status_field "$MAIN_PID" Threads)"
info "database size after load (MiB)" "$(du -cm "$WORK"/main/bb.db* | awk 'END { print $1 }')"
stop_server "$MAIN_PID"

# --------------------------------------------------------- long-poll waiters --
log "$WAITERS long-poll waiters"
start_server waiters
W_PID=$SERVER_PID
make_user_and_session
sleep 2
W_IDLE_RSS=$(status_field "$W_PID" VmRSS)
W_IDLE_THREADS=$(status_field "$W_PID" Threads)
cat >"$WORK/waiters.py" <<'PY'
import asyncio, json, statistics, sys, time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
key, sid, pid, n = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])


def proc_status():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def parse(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    return status, doc


async def waiter(i, opened):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
        w.write((f"GET /api/v1/connections/link/{sid}?wait=30 HTTP/1.1\r\n"
                 f"Host: {host}:{port}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n").encode())
        await w.drain()
    except (OSError, asyncio.TimeoutError) as e:
        opened.set_result(False)
        return (0, {}, time.monotonic(), repr(e))
    opened.set_result(True)
    try:
        raw = await asyncio.wait_for(r.read(), 45)
    except (OSError, asyncio.TimeoutError) as e:
        return (0, {}, time.monotonic(), repr(e))
    finally:
        w.close()
    at = time.monotonic()
    status, doc = parse(raw)
    return (status, doc, at, None)


async def request(method, path):
    r, w = await asyncio.open_connection(host, port)
    w.write((f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
             f"Content-Length: 0\r\nConnection: close\r\n\r\n").encode())
    await w.drain()
    raw = await asyncio.wait_for(r.read(), 20)
    w.close()
    return parse(raw)


async def main():
    loop = asyncio.get_running_loop()
    tasks, opens = [], []
    t_open = time.monotonic()
    # Open in batches of 100 so the listen backlog is not the thing measured.
    for b in range(0, n, 100):
        batch = []
        for i in range(b, min(n, b + 100)):
            fut = loop.create_future()
            tasks.append(asyncio.create_task(waiter(i, fut)))
            batch.append(fut)
        await asyncio.gather(*batch)
        opens += batch
    opened = sum(1 for f in opens if f.result())
    print(f"waiters_opened={opened}")
    print(f"waiters_open_seconds={time.monotonic() - t_open:.2f}")
    # Let the server read every request and register every waiter.
    await asyncio.sleep(3)
    early = sum(1 for t in tasks if t.done())
    st = proc_status()
    print(f"waiters_answered_early={early}")
    print(f"waiting_rss_kib={st['VmRSS']}")
    print(f"waiting_threads={st['Threads']}")
    t_cancel = time.monotonic()
    status, doc = await request("POST", f"/api/v1/connections/link/{sid}/cancel")
    print(f"cancel_status={status}")
    results = await asyncio.gather(*tasks)
    lat = [at - t_cancel for (s, d, at, e) in results if s == 200]
    ok_2s = sum(1 for (s, d, at, e) in results
                if s == 200 and d.get("status") == "failed" and at - t_cancel <= 2.0)
    errors = [e or f"HTTP {s}" for (s, d, at, e) in results if s != 200]
    print(f"waiters_200={len(lat)}")
    print(f"waiters_failed_within_2s={ok_2s}")
    print(f"waiters_wake_p50_ms={statistics.median(lat) * 1000 if lat else -1:.0f}")
    print(f"waiters_wake_max_ms={max(lat) * 1000 if lat else -1:.0f}")
    st = proc_status()
    print(f"after_rss_kib={st['VmRSS']}")
    print(f"after_threads={st['Threads']}")
    if errors:
        print(f"waiters_errors={len(errors)} first: {errors[0]}", file=sys.stderr)


asyncio.run(main())
PY
W_OUT=$(python3 "$WORK/waiters.py" "$ADDR" "$KEY" "$SESSION_ID" "$W_PID" "$WAITERS" 2>"$LOGS/waiters.stderr") \
    || die "waiters script failed: $(cat "$LOGS/waiters.stderr")"
echo "$W_OUT" >"$LOGS/waiters.txt"
W_RSS=$(kv waiting_rss_kib "$W_OUT")
info "waiters server before: RSS (MiB) / threads" "$(kib_to_mib "$W_IDLE_RSS") / $W_IDLE_THREADS"
info "$WAITERS waiters: RSS (MiB) / threads" "$(kib_to_mib "$W_RSS") / $(kv waiting_threads "$W_OUT")"
info "RSS per waiter (KiB)" "$(awk -v a="$W_RSS" -v b="$W_IDLE_RSS" -v n="$WAITERS" 'BEGIN { printf "%.1f", (a - b) / n }')"
info "waiters answered before the cancel" "$(kv waiters_answered_early "$W_OUT")"
judge "waiters answered 200 'failed' <= 2 s after cancel" "$(kv waiters_failed_within_2s "$W_OUT")" ge "$WAITERS" "= $WAITERS"
info "wake latency p50 / max (ms)" "$(kv waiters_wake_p50_ms "$W_OUT") / $(kv waiters_wake_max_ms "$W_OUT")"
info "after wake: RSS (MiB) / threads" "$(kib_to_mib "$(kv after_rss_kib "$W_OUT")") / $(kv after_threads "$W_OUT")"
stop_server "$W_PID"

# ----------------------------------------------------------------- report --
{
    echo "Breadbox benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "Rate limits off (BREADBOX_LIMITS_*_PER_MINUTE=0), log level warn; wrk -t2 -c32 ${WRK_SECONDS}s per rate, mixed load ${LOAD_SECONDS}s"
    printf '%-52s | %-22s | %-8s | %s\n' metric value target result
    printf '%s\n' "-----------------------------------------------------+------------------------+----------+-------"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r m v t p <<<"$r"
        printf '%-52s | %-22s | %-8s | %s\n' "$m" "$v" "$t" "$p"
    done
    if [[ $FAILED == 0 ]]; then echo "all targets met"; else echo "TARGETS MISSED (see FAIL rows)"; fi
} | tee "$OUT/results.txt"
exit "$FAILED"
