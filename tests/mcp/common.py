"""Shared helpers for the MCP client scripts run by tests/api/mcp.rs.

Each script drives Breadbox with the official MCP Python SDK (`pip install
mcp`), asserts, and exits non-zero on failure. Inputs come from the
environment: BREADBOX_BASE (http://127.0.0.1:PORT), BREADBOX_KEY (full_access),
BREADBOX_READ_KEY (read_only), plus script-specific ones.
"""

import asyncio
import json
import os
import sys
import urllib.request
from urllib.parse import urlparse

from mcp import Client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.client.streamable_http import streamable_http_client

BASE = os.environ.get("BREADBOX_BASE", "")
KEY = os.environ.get("BREADBOX_KEY", "")
READ_KEY = os.environ.get("BREADBOX_READ_KEY", "")


def http_client(key, **kw):
    """An MCP client over streamable HTTP at BASE/mcp acting as `key`."""
    transport = streamable_http_client(
        f"{BASE}/mcp", http_client=create_mcp_http_client(headers={"X-API-Key": key})
    )
    return Client(transport, **kw)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def structured(result, tool):
    """The structured content of a successful result."""
    check(not result.is_error, f"{tool} failed: {result.content}")
    check(result.structured_content is not None, f"{tool} has no structuredContent")
    return result.structured_content


def error_code(result, tool):
    """The REST code of a failed result."""
    check(result.is_error, f"{tool} should have failed: {result.structured_content}")
    return result.structured_content["error"]["code"]


async def call(client, tool, args=None):
    return await client.call_tool(tool, args or {})


def _post(url, body=None):
    data = json.dumps(body if body is not None else {}).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, json.loads(r.read() or b"null")


async def page_complete(link_url):
    """What the person does on the page: open the session, press "I'm done"."""
    token = urlparse(link_url).path.rsplit("/", 1)[-1]
    page = f"{BASE}/_link/{token}"
    status, _ = await asyncio.to_thread(_get, f"{page}/session")
    check(status == 200, f"GET /_link/…/session answered {status}")
    status = await asyncio.to_thread(_post, f"{page}/complete")
    check(status == 204, f"POST /_link/…/complete answered {status}")


def emit(obj):
    """One JSON line on stdout for the Rust side."""
    print(json.dumps(obj), flush=True)
