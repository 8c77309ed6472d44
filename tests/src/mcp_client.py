"""The e2e tests' MCP client: runs a list of operations in one MCP session with
the official MCP Python SDK (mcp 2.x, `mcp.Client`) and prints what happened as
one JSON object, so the Rust tests can drive an MCP server through the gateway
with a real SDK client.

    mcp_client.py --url URL [--transport streamable-http|sse] [--mode legacy|auto]
                  [--header 'Name: value']... --ops JSON

--ops is a JSON list run in order, e.g.
    [{"op": "list_tools"},
     {"op": "call", "tool": "echo", "args": {"text": "hi"}},
     {"op": "call", "tool": "count_slowly", "args": {"n": 3}, "progress": true},
     {"op": "call", "tool": "pick_color", "elicit": {"color": "green"}},
     {"op": "list_resources"}, {"op": "read_resource", "uri": "file:///data/reports/q3.txt"},
     {"op": "list_prompts"}, {"op": "get_prompt", "name": "summarize", "args": {"text": "x"}},
     {"op": "terminate"}]

Output (stdout, one line):
    {"results": [...], "session_id": str|null, "protocol_version": str|null}
with one result per op, in order:
    {"op": ..., "ok": true, "value": ...}
    {"op": ..., "ok": false, "error": {"code": int|null, "message": str[, "http_status": int]}}
A call's "elicit" is the content the client accepts the server's
elicitation requests with during that call (without it: declined).
Values: list_tools [{"name", "description"}]; call {"text", "is_error",
"structured"[, "progress": [values]]}; list_resources [{"uri", "name",
"description", "mime_type"}]; read_resource [{"uri", "mime_type", "text"}];
list_prompts [{"name", "description", "arguments"}]; get_prompt
{"description", "messages": [{"role", "text"}]}; terminate {"http_status"}.

`code` is the JSON-RPC error code of the SDK's MCPError: the server's or
gateway's own code when it answered a JSON-RPC error, the SDK's -32000 when
the connection or response stream closed early, and null for an HTTP error
whose body is no JSON-RPC error, for timeouts and for connection failures.
`http_status` is there when the POST/DELETE (or the SSE GET) got an HTTP error
status. An unknown tool is not an error here: the SDK server answers it with
a result, is_error true. If the session cannot be opened every op reports the
connect error ("connect: ..."); if the session dies mid-way (the connection,
not a JSON-RPC or HTTP error) the remaining ops are reported as skipped. Each
op has 10 s. Exit status 0 whenever the JSON was printed, 2 on usage errors.

Wire behaviour to expect from the SDK client: a `call` of a tool the session
has not listed yet is followed by a tools/list (the SDK fetches the tool's
output schema to validate the result); without a terminate op the SDK ends a
streamable-HTTP session with DELETE when the client closes. On the SSE
transport an HTTP error on a message POST ends the SDK's message writer: that
op times out (with its http_status) and later ops fail with -32000.

--mode legacy (the default) opens the session with the `initialize` handshake,
which gives the stateful streamable-HTTP session (Mcp-Session-Id) the tests
are about; --mode auto is the SDK's own default, which first probes
`server/discover` and, against an mcp 2.x server, settles on the stateless
2026-07-28 protocol (no session id, nothing to terminate).
"""

import argparse
import json
import sys
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitRequestParams, ElicitResult, TextContent, TextResourceContents

OP_TIMEOUT = 10.0

# op name -> fields it requires
OPS = {
    "list_tools": (),
    "call": ("tool",),
    "list_resources": (),
    "read_resource": ("uri",),
    "list_prompts": (),
    "get_prompt": ("name",),
    "terminate": (),
}


class HttpLog:
    """Watches every HTTP response the SDK's httpx2 client receives.

    The SDK turns an HTTP error on a request POST into a generic JSON-RPC
    error and drops the status, and it does not expose the streamable-HTTP
    session id; both are read here, off the wire.
    """

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.error_status: int | None = None  # last failed POST/DELETE since reset()
        self.error_was_json = False  # ... and whether its body was JSON (a JSON-RPC error)

    def reset(self) -> None:
        self.error_status = None
        self.error_was_json = False

    async def on_response(self, response: httpx2.Response) -> None:
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.session_id = session_id
        # Only requests carry answers; the background GET stream failing (e.g.
        # 405) says nothing about the op in progress.
        if response.request.method in ("POST", "DELETE") and response.status_code >= 400:
            self.error_status = response.status_code
            self.error_was_json = response.headers.get("content-type", "").startswith("application/json")

    def client_factory(self, headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                       auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        """An httpx2 client as the SDK makes one, plus this log's hook."""
        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout if timeout is not None else httpx2.Timeout(OP_TIMEOUT, read=300.0),
            auth=auth,
            # The tests steer traffic themselves (eBPF redirect); a proxy from
            # the environment must never get in between.
            trust_env=False,
            event_hooks={"response": [self.on_response]},
        )


class Refused(Exception):
    """An op this client cannot do (no server answer involved: code null)."""


def usage_error(message: str) -> None:
    print(f"mcp_client.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run MCP operations in one session; print JSON.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--mode", choices=["legacy", "auto"], default="legacy",
                        help="legacy: initialize handshake (default); auto: the SDK's discover probe")
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'")
    parser.add_argument("--ops", required=True, help="JSON list of operations")
    args = parser.parse_args()

    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            usage_error(f"--header wants 'Name: value', got {raw!r}")
        headers[name.strip()] = value.strip()
    args.headers = headers

    try:
        ops = json.loads(args.ops)
    except json.JSONDecodeError as e:
        usage_error(f"--ops is not JSON: {e}")
    if not isinstance(ops, list):
        usage_error("--ops must be a JSON list")
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or op.get("op") not in OPS:
            usage_error(f"ops[{i}]: want an object with op one of {sorted(OPS)}, got {op!r}")
        missing = [field for field in OPS[op["op"]] if field not in op]
        if missing:
            usage_error(f"ops[{i}] ({op['op']}) lacks {missing}")
        if not isinstance(op.get("args", {}), dict):
            usage_error(f"ops[{i}]: args must be an object")
    args.op_list = ops
    return args


def leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def error_of(exc: BaseException, log: HttpLog) -> dict[str, Any]:
    exc = leaf(exc)
    if isinstance(exc, MCPError):
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if log.error_status is not None and not log.error_was_json:
            # The SDK stands in a code of its own for an HTTP error without a
            # JSON-RPC body (-32603; -32601 or -32600 for 404); nobody sent it.
            error["code"] = None
    elif isinstance(exc, Refused):
        error = {"code": None, "message": str(exc)}
    elif isinstance(exc, TimeoutError):
        error = {"code": None, "message": f"timed out after {OP_TIMEOUT:g} s"}
    else:
        # First line only: httpx2's status errors append a "for more information" line.
        error = {"code": None, "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    status = log.error_status
    response = getattr(exc, "response", None)  # httpx2.HTTPStatusError (e.g. the SSE GET refused)
    if status is None and isinstance(response, httpx2.Response):
        status = response.status_code
    if status is not None:
        error["http_status"] = status
    return error


def is_session_gone(exc: BaseException) -> bool:
    exc = leaf(exc)
    if isinstance(exc, MCPError):
        return False  # an answer (or a stand-in for one): the session still runs
    return isinstance(exc, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                            httpx2.TransportError))


def number(x: float) -> int | float:
    # Progress values travel as JSON numbers the SDK parses to float; keep 1 as 1.
    return int(x) if float(x).is_integer() else x


def texts(content: list[Any]) -> str:
    return "\n".join(block.text for block in content if isinstance(block, TextContent))


async def run_op(client: Client, op: dict[str, Any], ctx: dict[str, Any]) -> Any:
    """Run one op; return its value or raise."""
    kind = op["op"]
    if kind == "list_tools":
        result = await client.list_tools()
        return [{"name": t.name, "description": t.description} for t in result.tools]
    if kind == "call":
        progress: list[int | float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(number(value))

        # What this call's elicitation requests get (none: declined).
        ctx["elicit"] = op.get("elicit")
        # Passing a callback is what makes the SDK put a progressToken in the request.
        result = await client.call_tool(op["tool"], op.get("args", {}),
                                        progress_callback=on_progress if op.get("progress") else None)
        value = {"text": texts(result.content), "is_error": bool(result.is_error),
                 "structured": result.structured_content}
        if op.get("progress"):
            value["progress"] = progress
        return value
    if kind == "list_resources":
        result = await client.list_resources()
        return [{"uri": str(r.uri), "name": r.name, "description": r.description, "mime_type": r.mime_type}
                for r in result.resources]
    if kind == "read_resource":
        result = await client.read_resource(op["uri"])
        return [{"uri": str(c.uri), "mime_type": c.mime_type,
                 "text": c.text if isinstance(c, TextResourceContents) else None} for c in result.contents]
    if kind == "list_prompts":
        result = await client.list_prompts()
        return [{"name": p.name, "description": p.description, "arguments": [a.name for a in p.arguments or []]}
                for p in result.prompts]
    if kind == "get_prompt":
        args = {k: str(v) for k, v in op.get("args", {}).items()}
        result = await client.get_prompt(op["name"], args)
        return {"description": result.description,
                "messages": [{"role": m.role, "text": m.content.text if isinstance(m.content, TextContent) else None}
                             for m in result.messages]}
    if kind == "terminate":
        return await terminate(client, ctx)
    raise AssertionError(kind)


async def terminate(client: Client, ctx: dict[str, Any]) -> dict[str, Any]:
    """End the streamable-HTTP session: DELETE on the endpoint with its session id.

    The SDK only sends this DELETE when the client closes, so it is sent here
    on the SDK's own HTTP client (same headers, same connection pool), the way
    the transport would, and the session stays open for the ops after it
    (which a server should now refuse with 404).
    """
    if ctx["http_client"] is None:
        raise Refused("terminate needs the streamable-http transport")
    session_id = ctx["log"].session_id
    if session_id is None:
        raise Refused("no Mcp-Session-Id to terminate")
    headers = {"mcp-session-id": session_id, "mcp-protocol-version": client.protocol_version}
    response = await ctx["http_client"].request("DELETE", ctx["url"], headers=headers)
    if response.status_code not in (200, 202, 204):
        raise Refused(f"DELETE answered {response.status_code}")  # http_status comes from the log
    return {"http_status": response.status_code}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ops = args.op_list
    log = HttpLog()
    out: dict[str, Any] = {"results": [], "session_id": None, "protocol_version": None}
    ctx: dict[str, Any] = {"log": log, "url": args.url, "http_client": None}

    def fail(op: dict[str, Any], error: dict[str, Any]) -> None:
        out["results"].append({"op": op["op"], "ok": False, "error": error})

    try:
        async with AsyncExitStack() as stack:
            if args.transport == "streamable-http":
                http_client = await stack.enter_async_context(log.client_factory(headers=args.headers))
                ctx["http_client"] = http_client
                # With a terminate op the session is ended by that op; otherwise
                # the SDK ends it (DELETE) when the client closes.
                terminating = any(op["op"] == "terminate" for op in ops)
                transport = streamable_http_client(args.url, http_client=http_client,
                                                   terminate_on_close=not terminating)
            else:
                def on_session(session_id: str) -> None:
                    log.session_id = session_id

                transport = sse_client(args.url, headers=args.headers, timeout=OP_TIMEOUT,
                                       httpx_client_factory=log.client_factory, on_session_created=on_session)
            # cache=None: every op must reach the wire (the SDK caches list
            # answers by default when the server sends cache hints).
            async def on_elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
                content = ctx.get("elicit")
                if content is None:
                    return ElicitResult(action="decline")
                return ElicitResult(action="accept", content=content)

            client = Client(transport, mode=args.mode, read_timeout_seconds=OP_TIMEOUT, cache=None,
                            elicitation_callback=on_elicit)
            log.reset()
            try:
                # The handshake is bounded by read_timeout_seconds; a cancel
                # scope cannot wrap entering the client (it opens task groups).
                await stack.enter_async_context(client)
            except Exception as exc:
                error = error_of(exc, log)
                error["message"] = "connect: " + error["message"]
                for op in ops:
                    fail(op, error)
                return out
            out["protocol_version"] = client.protocol_version

            gone: str | None = None
            for op in ops:
                if gone is not None:
                    fail(op, {"code": None, "message": f"skipped: session is gone ({gone})"})
                    continue
                log.reset()
                try:
                    with anyio.fail_after(OP_TIMEOUT):
                        value = await run_op(client, op, ctx)
                    out["results"].append({"op": op["op"], "ok": True, "value": value})
                except Exception as exc:
                    error = error_of(exc, log)
                    fail(op, error)
                    if is_session_gone(exc):
                        gone = error["message"]
    except Exception as exc:
        # The SDK's transport tasks run in a task group around the session:
        # when one of them fails (e.g. the server went away under the GET
        # stream) the group cancels the op in progress and raises here.
        reason = error_of(exc, log)["message"]
        print(f"mcp_client.py: session ended: {exc!r}", file=sys.stderr)
        for op in ops[len(out["results"]):]:
            fail(op, {"code": None, "message": f"skipped: session is gone ({reason})"})
    out["session_id"] = log.session_id
    return out


def main() -> None:
    args = parse_args()
    out = anyio.run(run, args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
