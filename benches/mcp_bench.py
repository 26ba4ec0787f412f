#!/usr/bin/env python3
"""MCP benchmark (issue 10): RSS and threads of the server with 1,000
concurrent `wait_for_bank_link` calls over streamable HTTP against idle, and
the median latency of `create_bank_link` over MCP against
`POST /api/v1/connections/link`, measured in the same run.

Usage: benches/mcp_bench.py [--bin target/release/breadbox] [--waiters 1000]
                            [--mints 200]
Standard library only (raw HTTP/1.1, so the client's own connection pool does
not cap the concurrency). Starts its own server on 127.0.0.1 with a scratch
database and stops it on exit. Prints one `metric | value` table.
"""

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

PROTOCOL = "2025-11-25"


def status_of(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return int(out["VmRSS"].split()[0]) // 1024, int(out["Threads"])


def start_server(binary, db):
    env = dict(os.environ)
    env.update({
        "BREADBOX_LIMITS_API_PER_MINUTE": "0",
        "BREADBOX_LIMITS_BAD_TOKEN_PER_MINUTE": "0",
        "BREADBOX_LIMITS_BAD_API_KEY_PER_MINUTE": "0",
        "BREADBOX_LOG_LEVEL": "warn",
    })
    proc = subprocess.Popen([binary, "--database", db, "serve", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            return proc, host, int(port)
    proc.kill()
    sys.exit("server did not start")


def make_key(binary, db):
    out = subprocess.run([binary, "--database", db, "--json", "keys", "create", "--name", "bench",
                          "--scope", "full_access"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["key"]


class Rest:
    def __init__(self, host, port, key):
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.key = key

    def call(self, method, path, body=None):
        headers = {"X-API-Key": self.key}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        return r.status, json.loads(r.read() or b"null")


class Mcp:
    """One MCP session over streamable HTTP on one keep-alive connection."""

    def __init__(self, host, port, key):
        self.host, self.port, self.key = host, port, key
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.session = None
        self.next_id = 1
        r = self.rpc("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                    "clientInfo": {"name": "bench", "version": "0"}})
        assert r["result"]["protocolVersion"] == PROTOCOL, r
        self.notify("notifications/initialized")

    def headers(self):
        h = {"X-API-Key": self.key, "Content-Type": "application/json",
             "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": PROTOCOL}
        if self.session:
            h["Mcp-Session-Id"] = self.session
        return h

    def notify(self, method):
        self.conn.request("POST", "/mcp", body=json.dumps({"jsonrpc": "2.0", "method": method}),
                          headers=self.headers())
        self.conn.getresponse().read()

    def request_body(self, method, params):
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.next_id += 1
        return json.dumps(body)

    def rpc(self, method, params):
        self.conn.request("POST", "/mcp", body=self.request_body(method, params),
                          headers=self.headers())
        r = self.conn.getresponse()
        self.session = r.getheader("Mcp-Session-Id") or self.session
        return parse_sse(r.read())

    def tool(self, name, args):
        r = self.rpc("tools/call", {"name": name, "arguments": args})
        return r["result"]


def parse_sse(raw):
    text = raw.decode()
    if text.lstrip().startswith("{"):
        return json.loads(text)
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip().startswith("{"):
            msg = json.loads(line[5:])
            if "result" in msg or "error" in msg:
                return msg
    raise ValueError(f"no JSON-RPC response in {text[:200]!r}")


async def waiter(host, port, headers, body, done):
    reader, writer = await asyncio.open_connection(host, port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write((f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body.encode())
    await writer.drain()
    seen = b""
    try:
        while b'"result"' not in seen:
            chunk = await reader.read(65536)
            if not chunk:
                break
            seen += chunk
    finally:
        writer.close()
    done.append((time.monotonic(), b'"status":"failed"' in seen))


async def thousand_waiters(host, port, key, pid, n, rest):
    user = rest.call("POST", "/api/v1/users", {"name": "Bench"})[1]
    session = rest.call("POST", "/api/v1/connections/link", {"user_id": user["id"]})[1]
    mcp = Mcp(host, port, key)
    headers = mcp.headers()
    done = []
    tasks = []
    for _ in range(n):
        body = mcp.request_body("tools/call", {"name": "wait_for_bank_link",
                                               "arguments": {"id": session["id"],
                                                             "timeout_seconds": 60}})
        tasks.append(asyncio.create_task(waiter(host, port, headers, body, done)))
    await asyncio.sleep(5)
    rss, threads = status_of(pid)
    early = len(done)
    t0 = time.monotonic()
    await asyncio.to_thread(rest.call, "POST", f"/api/v1/connections/link/{session['id']}/cancel")
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    answered = sum(1 for _, failed in done if failed)
    slowest = max((t for t, _ in done), default=t0) - t0
    return rss, threads, early, answered, slowest


async def rest_get(host, port, key, path, done):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
                  "Connection: close\r\n\r\n").encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    done.append(b'"status":"failed"' in data)


async def thousand_long_polls(host, port, key, pid, n, rest):
    """The same with the REST long-poll, for comparison."""
    user = rest.call("POST", "/api/v1/users", {"name": "Bench REST"})[1]
    session = rest.call("POST", "/api/v1/connections/link", {"user_id": user["id"]})[1]
    done = []
    path = f"/api/v1/connections/link/{session['id']}?wait=60"
    tasks = [asyncio.create_task(rest_get(host, port, key, path, done)) for _ in range(n)]
    await asyncio.sleep(5)
    rss, threads = status_of(pid)
    await asyncio.to_thread(rest.call, "POST", f"/api/v1/connections/link/{session['id']}/cancel")
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    return rss, threads, sum(done)


def latencies(host, port, key, rest, n):
    user = rest.call("POST", "/api/v1/users", {"name": "Latency"})[1]
    mcp = Mcp(host, port, key)
    rest_ms, mcp_ms = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = rest.call("POST", "/api/v1/connections/link", {"user_id": user["id"]})
        rest_ms.append((time.perf_counter() - t0) * 1000)
        assert status == 201
        t0 = time.perf_counter()
        r = mcp.tool("create_bank_link", {"user_id": user["id"]})
        mcp_ms.append((time.perf_counter() - t0) * 1000)
        assert not r.get("isError"), r
    return statistics.median(rest_ms), statistics.median(mcp_ms)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/breadbox")
    ap.add_argument("--waiters", type=int, default=1000)
    ap.add_argument("--mints", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        db = os.path.join(work, "bench.db")
        proc, host, port = start_server(a.bin, db)
        try:
            key = make_key(a.bin, db)
            rest = Rest(host, port, key)
            time.sleep(2)
            idle_rss, idle_threads = status_of(proc.pid)
            rest_med, mcp_med = latencies(host, port, key, rest, a.mints)
            rss, threads, early, answered, slowest = asyncio.run(
                thousand_waiters(host, port, key, proc.pid, a.waiters, rest))
            time.sleep(2)
            after_rss, after_threads = status_of(proc.pid)
            lp_rss, lp_threads, lp_answered = asyncio.run(
                thousand_long_polls(host, port, key, proc.pid, a.waiters, rest))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    rows = [
        ("idle RSS / threads", f"{idle_rss} MiB / {idle_threads}"),
        (f"{a.waiters} wait_for_bank_link over HTTP: RSS / threads",
         f"{rss} MiB / {threads}"),
        ("waiters answered before the cancel (should be 0)", str(early)),
        ("waiters answered 'failed' after the cancel", f"{answered}/{a.waiters} "
                                                       f"(last after {slowest:.2f} s)"),
        ("after they were answered: RSS / threads", f"{after_rss} MiB / {after_threads}"),
        (f"for comparison, {a.waiters} REST ?wait=60 long-polls: RSS / threads",
         f"{lp_rss} MiB / {lp_threads} ({lp_answered} answered 'failed')"),
        (f"median POST /api/v1/connections/link ({a.mints})", f"{rest_med:.2f} ms"),
        (f"median create_bank_link over MCP ({a.mints})", f"{mcp_med:.2f} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}} | {value}")
    return 0 if answered == a.waiters and early == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
