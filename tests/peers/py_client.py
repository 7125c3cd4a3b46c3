#!/usr/bin/env python3
"""Real MCP client (official Python SDK, PyPI `mcp` 2.x) for Portcullis integration tests.

    .venv/bin/python tests/peers/py_client.py URL [--key KEY] [--header 'Name: value']...
        [--mode legacy|auto] [--timeout SECONDS] [--trace] list
    .venv/bin/python tests/peers/py_client.py URL [...] call NAME '{"json":"args"}'

--sampling-reply TEXT: declare the sampling capability and answer every sampling/createMessage
      with an assistant text message TEXT from model "portcullis-test-model".
--elicit-reply JSON: declare the elicitation capability and answer every elicitation/create with
      this ElicitResult (e.g. '{"action":"decline"}').
With either, the call output gains "serverRequests": [{"method": ..., "params": <as received>}].

stdout: exactly one JSON line
  list -> {"tools": [<Tool as sent on the wire: name, inputSchema, annotations?, ...>]} (all pages)
  call -> {"content": [...], "structuredContent": {...}|null, "isError": bool, ...}
          or {"error": {"code": N, "message": "...", "data"?: ...}} for a JSON-RPC error
exit: 0 for both of those; 2 for anything else (connect/initialize failure, transport error),
      with the reason on stderr. A failed initialize prints no stdout line.
stderr: `protocol_version=<negotiated>` after the handshake, and `http_status=<N>` lines for
      every non-2xx HTTP answer. --trace also logs every HTTP exchange (`> METHOD headers` /
      `< STATUS content-type`).

--key KEY sends `Authorization: Bearer KEY` on every HTTP request.
--mode legacy (default): ClientSession.initialize() - the initialize handshake offering
      protocolVersion 2025-11-25 (mcp_types.version.LATEST_HANDSHAKE_VERSION).
--mode auto: mcp.Client's default policy - first POSTs `server/discover` at 2026-07-28 (with
      `MCP-Protocol-Version: 2026-07-28` and `Mcp-Method: server/discover`) and falls back to
      initialize on any JSON-RPC/HTTP error.
"""

import argparse
import asyncio
import json
import sys
from contextlib import AsyncExitStack

import httpx2
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp import types
from mcp.types import PaginatedRequestParams


def err(*a):
    print(*a, file=sys.stderr, flush=True)


def dump(model) -> dict:
    # exclude_unset: only the fields that were on the wire (no SDK-side defaults such as resultType)
    return model.model_dump(by_alias=True, exclude_unset=True, mode="json")


def make_http_client(args) -> httpx2.AsyncClient:
    headers = {}
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()

    async def on_request(req):
        if args.trace:
            shown = {k: v for k, v in req.headers.items() if k.lower().startswith("mcp") or k.lower() in
                     ("accept", "content-type", "authorization", "last-event-id")}
            err(f"> {req.method} {req.url.path} {json.dumps(shown)}")

    async def on_response(resp):
        if args.trace:
            err(f"< {resp.status_code} {resp.headers.get('content-type', '')} "
                f"session={resp.headers.get('mcp-session-id', '')} ({resp.request.method})")
        if resp.status_code >= 300:
            err(f"http_status={resp.status_code}")

    # Same timeouts as the SDK's own default client (30 s, read 300 s), unless --timeout.
    timeout = httpx2.Timeout(30.0, read=args.timeout or 300.0)
    return httpx2.AsyncClient(headers=headers, timeout=timeout,
                              event_hooks={"request": [on_request], "response": [on_response]})


def server_request_callbacks(args, seen: list) -> dict:
    """ClientSession callbacks for --sampling-reply / --elicit-reply; each records what it got."""
    callbacks = {}
    if args.sampling_reply is not None:
        async def sampling(context, params):
            seen.append({"method": "sampling/createMessage", "params": dump(params)})
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text=args.sampling_reply),
                model="portcullis-test-model", stop_reason="endTurn")
        callbacks["sampling_callback"] = sampling
    if args.elicit_reply is not None:
        async def elicitation(context, params):
            seen.append({"method": "elicitation/create", "params": dump(params)})
            return types.ElicitResult.model_validate(json.loads(args.elicit_reply))
        callbacks["elicitation_callback"] = elicitation
    return callbacks


async def pages(fetch, member: str) -> list:
    out, cursor = [], None
    while True:
        res = await fetch(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        out += [dump(i) for i in getattr(res, member)]
        cursor = res.next_cursor
        if not cursor:
            return out


async def items(session, args) -> dict:
    """The resources, prompts and completion subcommands; a JSON-RPC error is output as {"error": ...}."""
    try:
        if args.cmd == "resources":
            return {"resources": await pages(session.list_resources, "resources"),
                    "resourceTemplates": await pages(session.list_resource_templates, "resource_templates")}
        if args.cmd == "prompts":
            return {"prompts": await pages(session.list_prompts, "prompts")}
        if args.cmd == "read":
            return dump(await session.read_resource(args.uri))
        if args.cmd == "get":
            return dump(await session.get_prompt(args.name, json.loads(args.arguments)))
        ref = (types.PromptReference(type="ref/prompt", name=args.ref) if args.kind == "prompt"
               else types.ResourceTemplateReference(type="ref/resource", uri=args.ref))
        return dump(await session.complete(ref, {"name": args.argument, "value": args.value}))
    except MCPError as e:
        return {"error": dump(e.error)}


async def run(args) -> int:
    seen = []
    callbacks = server_request_callbacks(args, seen)
    async with make_http_client(args) as http, AsyncExitStack() as stack:
        transport = streamable_http_client(args.url, http_client=http)
        try:
            if args.mode == "auto":  # mcp.Client: server/discover probe, then initialize fallback
                client = await stack.enter_async_context(
                    Client(transport, mode="auto", read_timeout_seconds=args.timeout))
                session = client.session
            else:  # plain ClientSession + initialize handshake
                read, write = await stack.enter_async_context(transport)
                session = await stack.enter_async_context(
                    ClientSession(read, write, read_timeout_seconds=args.timeout, **callbacks))
                await session.initialize()
        except MCPError as e:
            err(f"initialize failed: JSON-RPC error {e.code}: {e.message}")
            return 2
        err(f"protocol_version={session.protocol_version}")
        if args.cmd == "list":
            tools, cursor = [], None
            while True:
                params = PaginatedRequestParams(cursor=cursor) if cursor else None
                res = await session.list_tools(params=params)
                tools += [dump(t) for t in res.tools]
                cursor = res.next_cursor
                if not cursor:
                    break
            print(json.dumps({"tools": tools}), flush=True)
            return 0
        if args.cmd != "call":
            print(json.dumps(await items(session, args)), flush=True)
            return 0
        try:
            res = await session.call_tool(args.name, json.loads(args.arguments))
        except MCPError as e:
            print(json.dumps({"error": dump(e.error)}), flush=True)
            return 0
        out = dump(res)
        out.setdefault("structuredContent", None)
        out["isError"] = bool(res.is_error)
        if callbacks:
            out["serverRequests"] = seen
        print(json.dumps(out), flush=True)
        return 0
        # Leaving the stack closes the session; the transport then sends DELETE if it got an Mcp-Session-Id.


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--key", help="sent as Authorization: Bearer KEY")
    p.add_argument("--header", action="append", default=[], help="extra header 'Name: value' (repeatable)")
    p.add_argument("--mode", choices=["legacy", "auto"], default="legacy")
    p.add_argument("--timeout", type=float, default=None, help="per-request read timeout in seconds")
    p.add_argument("--trace", action="store_true", help="log every HTTP exchange on stderr")
    p.add_argument("--sampling-reply", help="answer sampling/createMessage with this text")
    p.add_argument("--elicit-reply", help="answer elicitation/create with this ElicitResult JSON")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    c = sub.add_parser("call")
    c.add_argument("name")
    c.add_argument("arguments", nargs="?", default="{}")
    sub.add_parser("resources", help="every resource and resource template")
    sub.add_parser("prompts", help="every prompt")
    r = sub.add_parser("read", help="resources/read")
    r.add_argument("uri")
    g = sub.add_parser("get", help="prompts/get")
    g.add_argument("name")
    g.add_argument("arguments", nargs="?", default="{}")
    k = sub.add_parser("complete", help="completion/complete")
    k.add_argument("kind", choices=["prompt", "resource"])
    k.add_argument("ref", help="the prompt name or the resource template URI")
    k.add_argument("argument")
    k.add_argument("value")
    args = p.parse_args()
    try:
        return asyncio.run(run(args))
    except MCPError as e:  # e.g. a JSON-RPC error on list
        err(f"JSON-RPC error {e.code}: {e.message}")
        return 2
    except BaseException as e:  # transport errors (connection refused, ...), often inside an ExceptionGroup
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        err(f"error: {type(e).__name__}: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
