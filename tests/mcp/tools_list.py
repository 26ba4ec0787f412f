"""tools/list over HTTP: names, valid JSON Schemas, annotations, descriptions;
a read_only key sees only the read tools and cannot call the others."""

import asyncio

from jsonschema.validators import validator_for

from common import READ_KEY, KEY, call, check, error_code, http_client

ALL = [
    "list_members", "create_member", "create_bank_link", "get_bank_link",
    "wait_for_bank_link", "list_bank_links", "cancel_bank_link", "list_connections",
    "get_connection", "relink_connection", "disconnect_connection", "link_bank_account",
]
READ = ["list_members", "get_bank_link", "wait_for_bank_link", "list_bank_links",
        "list_connections", "get_connection"]
DESTRUCTIVE = ["cancel_bank_link", "disconnect_connection"]


async def main():
    async with http_client(KEY) as client:
        check(client.protocol_version == "2025-11-25", f"negotiated {client.protocol_version}")
        tools = (await client.list_tools()).tools
        check(sorted(t.name for t in tools) == sorted(ALL), f"tools: {[t.name for t in tools]}")
        for t in tools:
            for kind, schema in (("input", t.input_schema), ("output", t.output_schema)):
                check(schema is not None and schema.get("type") == "object",
                      f"{t.name} {kind} schema is not an object schema")
                validator_for(schema).check_schema(schema)
            check(t.description and len(t.description) > 80, f"{t.name} description too short")
            a = t.annotations
            check(a is not None, f"{t.name} has no annotations")
            check(a.read_only_hint is (t.name in READ), f"{t.name} readOnlyHint {a.read_only_hint}")
            check(a.destructive_hint is (t.name in DESTRUCTIVE),
                  f"{t.name} destructiveHint {a.destructive_hint}")
            check(a.idempotent_hint is not None, f"{t.name} has no idempotentHint")
        props = next(t for t in tools if t.name == "create_bank_link").input_schema["properties"]
        for field in ["user_id", "provider", "single_use", "redirect_url", "label",
                      "expires_in_seconds"]:
            check(field in props, f"create_bank_link input lacks {field}")
        # An unknown tool is a protocol error, not a tool result.
        try:
            await client.call_tool("no_such_tool", {})
            check(False, "unknown tool did not raise")
        except Exception as e:  # MCPError
            check("unknown tool" in str(e), f"unknown tool error: {e}")

    async with http_client(READ_KEY) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        check(names == sorted(READ), f"read_only key sees {names}")
        r = await call(client, "create_member", {"name": "Eve"})
        check(error_code(r, "create_member") == "INSUFFICIENT_SCOPE", "read_only create_member")
        r = await call(client, "list_members")
        check(not r.is_error, "read_only list_members")


asyncio.run(main())
