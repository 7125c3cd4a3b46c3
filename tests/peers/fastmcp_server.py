#!/usr/bin/env python3
"""Annotated MCP upstream for Portcullis integration tests.

Built on the official Python SDK (PyPI `mcp` 2.x, `mcp.server.mcpserver.MCPServer`,
formerly FastMCP), served over Streamable HTTP by uvicorn at http://127.0.0.1:PORT/mcp.

    .venv/bin/python tests/peers/fastmcp_server.py --port 0 [--require-bearer TOKEN]
        [--json-response] [--stateless] [--log-requests] [--test-tools]

Prints exactly one stdout line `listening on http://127.0.0.1:PORT/mcp` (flushed) once
the socket accepts connections; `--port 0` picks a free port and prints it.
  --require-bearer T  answer 401 (+ WWW-Authenticate: Bearer) unless `Authorization: Bearer T`
  --json-response     answer POSTs with application/json instead of SSE (default: SSE)
  --stateless         no Mcp-Session-Id (SDK stateless mode)
  --log-requests      one JSON line per HTTP request on stderr: {"method","path","headers","body"}
  --test-tools        also register `slow_echo` {text, seconds}, `fail_tool` {} (isError result),
                      `rpc_error` {code?, message?} (JSON-RPC error), all read-only, and
                      `register_tool` {name} (registers a new tool `name` at run time; it
                      answers {"called": name})
  --items             also serve resources and prompts: `items://catalog` (every item, JSON),
                      the template `items://item/{id}` (one item), and the prompt
                      `summarise_item` {id} (one user message naming the item)
"""

import argparse
import asyncio
import json
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import ToolAnnotations


def ann(ro=None, de=None, idem=None, ow=None) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=ro, destructive_hint=de, idempotent_hint=idem, open_world_hint=ow)


ITEMS = [{"id": "1", "name": "alpha"}, {"id": "2", "name": "beta"}, {"id": "3", "name": "gamma"}]


def build_server(test_tools: bool, items: bool = False) -> MCPServer:
    srv = MCPServer("portcullis-test-upstream", version="1.0.0", log_level="WARNING")

    @srv.tool(annotations=ann(ro=True, de=False, idem=True, ow=False))
    def list_items() -> dict[str, Any]:
        """List all items."""
        return {"items": ITEMS}

    @srv.tool(annotations=ann(ro=True))
    def get_item(id: str) -> dict[str, Any]:
        """Get one item by id."""
        for it in ITEMS:
            if it["id"] == id:
                return it
        raise ValueError(f"no item {id}")

    @srv.tool(annotations=ann(ro=False, de=False, idem=False, ow=True))
    def send_message(channel: str, text: str) -> dict[str, Any]:
        """Send a message to a channel (pretend)."""
        return {"sent": True, "channel": channel, "text": text}

    @srv.tool(annotations=ann(ro=False, de=False))
    def post_note(text: str) -> dict[str, Any]:
        """Post a note (pretend)."""
        return {"posted": True, "text": text}

    @srv.tool(annotations=ann(ro=False, de=True))
    def delete_item(id: str) -> dict[str, Any]:
        """Delete one item (pretend; nothing changes)."""
        return {"deleted": id}

    @srv.tool(annotations=ann(de=True))
    def delete_all() -> dict[str, Any]:
        """Delete every item (pretend)."""
        return {"deleted": "all"}

    @srv.tool(annotations=ann(ro=False, de=True, idem=True, ow=False))
    def write_file(path: str, content: str) -> dict[str, Any]:
        """Write a file (pretend: nothing is written)."""
        return {"path": path, "bytes": len(content.encode())}

    @srv.tool()  # deliberately NO annotations
    def unannotated_tool(x: str) -> dict[str, Any]:
        """A tool without any annotations (all spec defaults apply)."""
        return {"x": x}

    @srv.tool(annotations=ann(ro=True, ow=False))
    def read_config() -> dict[str, Any]:
        """Read the (fake) configuration."""
        return {"config": {"mode": "test", "version": 1}}

    if items:
        @srv.resource("items://catalog", name="catalog", mime_type="application/json")
        def catalog() -> str:
            """Every item."""
            return json.dumps(ITEMS)

        @srv.resource("items://item/{id}", name="item", mime_type="application/json")
        def item(id: str) -> str:
            """One item by id."""
            for it in ITEMS:
                if it["id"] == id:
                    return json.dumps(it)
            raise ValueError(f"no item {id}")

        @srv.prompt(name="summarise_item", description="Ask for a summary of one item")
        def summarise_item(id: str) -> str:
            return f"Summarise item {id} in one sentence."

    if test_tools:
        @srv.tool(annotations=ann(ro=True, de=False, idem=True, ow=False))
        async def slow_echo(text: str, seconds: float) -> dict[str, Any]:
            """Sleep `seconds`, then echo `text` (for timeout tests)."""
            await asyncio.sleep(seconds)
            return {"text": text}

        @srv.tool(annotations=ann(ro=True, de=False, idem=True, ow=False))
        def fail_tool() -> dict[str, Any]:
            """Always raises: the SDK answers with a result whose isError is true."""
            raise RuntimeError("fail_tool always fails")

        @srv.tool()
        def register_tool(name: str) -> dict[str, Any]:
            """Register a new tool called `name` (a server whose tools change at run time)."""
            def added() -> dict[str, Any]:
                return {"called": name}
            srv.add_tool(added, name=name, description=f"Registered at run time as {name}.")
            return {"registered": name}

        @srv.tool(annotations=ann(ro=True, de=False, idem=True, ow=False))
        def rpc_error(code: int = -32000, message: str = "upstream says no") -> dict[str, Any]:
            """Always answers with a JSON-RPC error {code, message} (an MCPError passes through)."""
            raise MCPError(code=code, message=message)

    return srv


class RequireBearer:
    """ASGI middleware: 401 unless `Authorization: Bearer <token>`; lifespan passes through."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.expected:
            body = b'{"error":"invalid_token"}'
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer error="invalid_token"')]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class LogRequests:
    """ASGI middleware: log each HTTP request (method, path, headers, body) as JSON on stderr."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:  # buffer the body, then replay it to the app
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        print(json.dumps({"method": scope["method"], "path": scope["path"], "headers": headers,
                          "body": body.decode("utf-8", "replace")}), file=sys.stderr, flush=True)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # e.g. http.disconnect

        await self.app(scope, replay, send)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port_pos", nargs="?", type=int, help="port (same as --port)")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--require-bearer", metavar="TOKEN")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--log-requests", action="store_true")
    p.add_argument("--test-tools", action="store_true")
    p.add_argument("--items", action="store_true")
    a = p.parse_args()
    port = a.port if a.port is not None else (a.port_pos if a.port_pos is not None else 0)

    srv = build_server(a.test_tools, a.items)
    # host="127.0.0.1" keeps the SDK's DNS-rebinding check: Host must be 127.0.0.1:*/localhost:*/[::1]:*
    # (else 421), Origin, when present, http://127.0.0.1:*/localhost:*/[::1]:* (else 403).
    app = srv.streamable_http_app(json_response=a.json_response, stateless_http=a.stateless, host="127.0.0.1")
    if a.require_bearer:
        app = RequireBearer(app, a.require_bearer)
    if a.log_requests:
        app = LogRequests(app)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # set once the socket is bound and listening
        if task.done():
            await task  # surface the startup error
            sys.exit(1)
        await asyncio.sleep(0.02)
    real_port = server.servers[0].sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{real_port}/mcp", flush=True)
    await task


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
