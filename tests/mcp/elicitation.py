"""link_bank_account with URL elicitation end to end over HTTP: the client's
elicitation callback receives the page URL, the person completes the session
through /_link, the tool returns the outcome, and
notifications/elicitation/complete arrives. Then the fallback: a client
without elicitation gets url + message at once."""

import asyncio

import mcp_types as types

from common import KEY, call, check, emit, error_code, http_client, page_complete, structured

asked = []
completed = []
person = []


async def on_elicit(ctx, params):
    check(getattr(params, "mode", None) == "url", f"elicitation mode {params}")
    asked.append((params.url, params.elicitation_id, params.message))
    # The person opens the link and finishes, a moment after saying yes.
    person.append(asyncio.create_task(finish(params.url)))
    return types.ElicitResult(action="accept")


async def finish(url):
    await asyncio.sleep(0.3)
    await page_complete(url)


async def on_message(message):
    if isinstance(message, types.ElicitCompleteNotification):
        completed.append(message.params.elicitation_id)


async def main():
    async with http_client(KEY, elicitation_callback=on_elicit, message_handler=on_message) as c:
        ana = structured(await call(c, "create_member", {"name": "Ana"}), "create_member")
        out = structured(await call(c, "link_bank_account",
                                    {"user_id": ana["id"], "timeout_seconds": 30}),
                         "link_bank_account")
        check(len(asked) == 1, f"elicitations: {asked}")
        url, elicitation_id, message = asked[0]
        check("/link/" in url and url == out["url"], f"elicited {url}, result {out['url']}")
        check("Ana" in message, f"elicitation message {message!r}")
        check(out["outcome"] == "completed", f"outcome {out['outcome']}")
        check(out["session"]["status"] == "completed", "session status")
        check(elicitation_id == out["session"]["id"], "elicitation id is the session id")
        for _ in range(50):
            if completed:
                break
            await asyncio.sleep(0.1)
        check(completed == [elicitation_id], f"completion notifications {completed}")
        emit({"session_id": out["session"]["id"]})

    async with http_client(KEY) as c:
        ana = structured(await call(c, "list_members"), "list_members")["users"][0]
        out = structured(await call(c, "link_bank_account", {"user_id": ana["id"]}),
                         "link_bank_account")
        check(out["outcome"] == "pending", f"fallback outcome {out['outcome']}")
        check("/link/" in out["url"] and out["url"] in out["message"], "fallback url + message")
        r = await call(c, "link_bank_account", {"user_id": "nobody12"})
        check(error_code(r, "link_bank_account") == "NOT_FOUND", "unknown member")
        r = await call(c, "link_bank_account", {"user_id": ana["id"], "timeout_seconds": 0})
        check(error_code(r, "link_bank_account") == "VALIDATION_ERROR", "timeout 0")
        r = await call(c, "link_bank_account", {"user_id": ana["id"]})
        text = " ".join(getattr(b, "text", "") for b in r.content)
        check("wait_for_bank_link" in text, f"fallback text {text!r}")


    async def decline(ctx, params):
        return types.ElicitResult(action="decline")

    async with http_client(KEY, elicitation_callback=decline) as c:
        ana = structured(await call(c, "list_members"), "list_members")["users"][0]
        out = structured(await call(c, "link_bank_account", {"user_id": ana["id"]}),
                         "link_bank_account")
        check(out["outcome"] == "declined", f"declined outcome {out['outcome']}")
        check(out["session"]["status"] == "failed", "a declined link is canceled")


asyncio.run(main())
