"""wait_for_bank_link over HTTP: times out on a quiet session, and is woken
by the page (POST /_link/{token}/complete) well before its timeout."""

import asyncio
import time

from common import KEY, call, check, error_code, http_client, page_complete, structured


async def main():
    async with http_client(KEY) as c:
        ana = structured(await call(c, "create_member", {"name": "Ana"}), "create_member")
        link = structured(await call(c, "create_bank_link", {"user_id": ana["id"]}),
                          "create_bank_link")

        t0 = time.monotonic()
        s = structured(await call(c, "wait_for_bank_link", {"id": link["id"], "timeout_seconds": 1}),
                       "wait_for_bank_link")
        took = time.monotonic() - t0
        check(s["status"] == "pending", f"quiet wait returned {s['status']}")
        check(0.9 <= took < 5, f"1 s wait took {took:.2f} s")

        r = await call(c, "wait_for_bank_link", {"id": link["id"], "timeout_seconds": 61})
        check(error_code(r, "wait_for_bank_link") == "VALIDATION_ERROR", "timeout 61")

        async def person():
            await asyncio.sleep(0.5)
            await page_complete(link["url"])

        t0 = time.monotonic()
        waiting = asyncio.create_task(
            call(c, "wait_for_bank_link", {"id": link["id"], "timeout_seconds": 30}))
        await person()
        s = structured(await waiting, "wait_for_bank_link")
        # The page's session call moves it to active first: wait again for the end.
        while s["status"] == "active":
            s = structured(await call(c, "wait_for_bank_link",
                                      {"id": link["id"], "timeout_seconds": 30}),
                           "wait_for_bank_link")
        took = time.monotonic() - t0
        check(s["status"] == "completed", f"woken wait returned {s['status']}")
        check(took < 10, f"woken wait took {took:.2f} s")

        # A terminal session answers at once.
        t0 = time.monotonic()
        s = structured(await call(c, "wait_for_bank_link", {"id": link["id"], "timeout_seconds": 30}),
                       "wait_for_bank_link")
        check(s["status"] == "completed" and time.monotonic() - t0 < 2, "terminal wait")


asyncio.run(main())
