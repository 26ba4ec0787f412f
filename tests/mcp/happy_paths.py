"""Every tool's happy path and an error mapping, over HTTP.

Env: BREADBOX_CONNECTION_ID (an active Plaid connection whose owner is
BREADBOX_OWNER_ID). Prints the ids it made for the Rust side to check."""

import asyncio
import os

from common import KEY, call, check, emit, error_code, http_client, structured

CONN = os.environ["BREADBOX_CONNECTION_ID"]
OWNER = os.environ["BREADBOX_OWNER_ID"]


async def main():
    async with http_client(KEY) as c:
        ana = structured(await call(c, "create_member", {"name": "Ana Example"}), "create_member")
        check(ana["name"] == "Ana Example" and ana["email"] is None, f"member {ana}")
        r = await call(c, "create_member", {"name": ""})
        check(error_code(r, "create_member") == "VALIDATION_ERROR", "empty name")
        r = await call(c, "list_members", {"everyone": True})
        check(error_code(r, "list_members") == "VALIDATION_ERROR", "list_members unknown field")
        members = structured(await call(c, "list_members"), "list_members")["users"]
        check(any(m["id"] == ana["id"] for m in members), "list_members lacks Ana")

        link = structured(await call(c, "create_bank_link",
                                     {"user_id": ana["short_id"], "label": "mcp test"}),
                          "create_bank_link")
        for k in ["id", "token", "url", "message", "status", "expires_at"]:
            check(k in link, f"create_bank_link lacks {k}")
        check(link["status"] == "pending" and "/link/" in link["url"], f"link {link}")
        check("Ana Example" in link["message"] and link["url"] in link["message"]
              and "expires" in link["message"], f"message {link['message']!r}")
        r = await call(c, "create_bank_link", {"user_id": "nobody12"})
        check(error_code(r, "create_bank_link") == "NOT_FOUND", "unknown user")
        r = await call(c, "create_bank_link", {"user_id": ana["id"], "expires_in_seconds": 99999})
        check(error_code(r, "create_bank_link") == "VALIDATION_ERROR", "ttl too long")
        r = await call(c, "create_bank_link", {"user_id": ana["id"], "colour": "red"})
        check(error_code(r, "create_bank_link") == "VALIDATION_ERROR", "unknown field")

        got = structured(await call(c, "get_bank_link", {"id": link["short_id"]}), "get_bank_link")
        check(got["id"] == link["id"] and "token" not in got, f"get {got}")
        r = await call(c, "get_bank_link", {"id": "nope"})
        check(error_code(r, "get_bank_link") == "NOT_FOUND", "get unknown")

        page = structured(await call(c, "list_bank_links", {"user_id": ana["id"], "limit": 10}),
                          "list_bank_links")
        check([s["id"] for s in page["sessions"]] == [link["id"]], f"list {page}")
        check(page["next_cursor"] is None, "next_cursor")
        r = await call(c, "list_bank_links", {"status": "sleeping"})
        check(error_code(r, "list_bank_links") == "VALIDATION_ERROR", "bad status")

        canceled = structured(await call(c, "cancel_bank_link", {"id": link["id"]}),
                              "cancel_bank_link")
        check(canceled["status"] == "failed" and canceled["error_code"] == "CANCELED",
              f"cancel {canceled}")
        r = await call(c, "cancel_bank_link", {"id": link["id"]})
        check(error_code(r, "cancel_bank_link") == "INVALID_STATE", "cancel twice")

        conns = structured(await call(c, "list_connections", {"user_id": OWNER}),
                           "list_connections")["connections"]
        check([x["id"] for x in conns] == [CONN], f"connections {conns}")
        r = await call(c, "list_connections", {"status": "sleeping"})
        check(error_code(r, "list_connections") == "VALIDATION_ERROR", "bad status")
        conn = structured(await call(c, "get_connection", {"id": CONN}), "get_connection")
        check(conn["status"] == "active" and "credential" not in conn, f"connection {conn}")
        r = await call(c, "get_connection", {"id": "nope"})
        check(error_code(r, "get_connection") == "NOT_FOUND", "get unknown connection")

        relink = structured(await call(c, "relink_connection", {"id": CONN}), "relink_connection")
        check(relink["action"] == "relink" and relink["connection_id"] == CONN
              and "reconnect" in relink["message"], f"relink {relink}")

        gone = structured(await call(c, "disconnect_connection", {"id": CONN}),
                          "disconnect_connection")
        check(gone["status"] == "disconnected", f"disconnect {gone}")
        r = await call(c, "relink_connection", {"id": CONN})
        check(error_code(r, "relink_connection") == "CONNECTION_DISCONNECTED", "relink gone")
        r = await call(c, "disconnect_connection", {"id": "nope"})
        check(error_code(r, "disconnect_connection") == "NOT_FOUND", "disconnect unknown")

        emit({"link_id": link["id"], "relink_id": relink["id"]})


asyncio.run(main())
