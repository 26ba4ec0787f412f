"""`breadbox mcp` over stdio, acting as the key in BREADBOX_API_KEY.

Env: BREADBOX_BIN, BREADBOX_DB, BREADBOX_STDIO_KEY (the key to act as),
BREADBOX_STDIO_READ_KEY (a read_only key). Prints the created session id."""

import asyncio
import os
import time

from mcp import Client, StdioServerParameters

from common import BASE, call, check, emit, error_code, page_complete, structured


def server(key):
    return StdioServerParameters(
        command=os.environ["BREADBOX_BIN"],
        args=["--database", os.environ["BREADBOX_DB"], "mcp"],
        env={"BREADBOX_API_KEY": key, "PATH": os.environ.get("PATH", "")},
    )


async def main():
    async with Client(server(os.environ["BREADBOX_STDIO_KEY"])) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        check(len(names) == 12 and "link_bank_account" in names, f"stdio tools {names}")
        ana = structured(await call(c, "create_member", {"name": "Ana Stdio"}), "create_member")
        link = structured(await call(c, "create_bank_link", {"user_id": ana["id"]}),
                          "create_bank_link")
        check(link["url"].startswith("http") and "Ana Stdio" in link["message"], f"link {link}")
        s = structured(await call(c, "wait_for_bank_link", {"id": link["id"], "timeout_seconds": 1}),
                       "wait_for_bank_link")
        check(s["status"] == "pending", "stdio wait")
        # The page is served by another process (the server): its change
        # reaches this process's waiter through the database.
        waiting = asyncio.create_task(
            call(c, "wait_for_bank_link", {"id": link["id"], "timeout_seconds": 20}))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await page_complete(link["url"].replace(link["url"].split("/link/")[0], BASE))
        s = structured(await waiting, "wait_for_bank_link")
        check(s["status"] in ("active", "completed"), f"stdio woken wait {s['status']}")
        check(time.monotonic() - t0 < 5, "stdio waiter woken within seconds")
        emit({"session_id": link["id"]})

    async with Client(server(os.environ["BREADBOX_STDIO_READ_KEY"])) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        check("create_bank_link" not in names and "get_bank_link" in names, f"read tools {names}")
        r = await call(c, "create_member", {"name": "Eve"})
        check(error_code(r, "create_member") == "INSUFFICIENT_SCOPE", "stdio read_only")


asyncio.run(main())
