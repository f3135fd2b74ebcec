"""An MCP client built with the official Python SDK, for countersign's tests.

Connects to URL (through countersign), lists the tools, then makes each
call given as JSON (`{"tool": ..., "args": {...}, "meta": {...},
"progress": true}`) and prints one JSON line per call: the tool result
(`isError`, `text`, `structured`), how many progress notifications came,
or the error the SDK raised.

usage: client.py URL [--mode auto|legacy|2026-07-28] [--header NAME=VALUE]... [--timeout S] CALL...
"""

import json
import sys

import anyio
import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client


def parse(argv):
    url, mode, headers, timeout, calls = argv[1], "auto", {}, 30.0, []
    i = 2
    while i < len(argv):
        a = argv[i]
        if a == "--mode":
            mode, i = argv[i + 1], i + 2
        elif a == "--header":
            name, value = argv[i + 1].split("=", 1)
            headers[name] = value
            i += 2
        elif a == "--timeout":
            timeout, i = float(argv[i + 1]), i + 2
        else:
            calls.append(json.loads(a))
            i += 1
    return url, mode, headers, timeout, calls


async def main():
    url, mode, headers, timeout, calls = parse(sys.argv)
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout, read=timeout))
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=timeout) as client:
            tools = await client.list_tools()
            print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
            for call in calls:
                progress = []

                async def on_progress(p, total, message):
                    progress.append(p)

                try:
                    result = await client.call_tool(
                        call["tool"],
                        call.get("args", {}),
                        progress_callback=on_progress if call.get("progress") else None,
                        meta=call.get("meta"),
                    )
                    text = "".join(getattr(c, "text", "") for c in result.content)
                    out = {
                        "tool": call["tool"],
                        "isError": bool(result.is_error),
                        "text": text,
                        "progress": len(progress),
                    }
                except Exception as e:  # what the model would be told
                    out = {"tool": call["tool"], "error": f"{type(e).__name__}: {e}", "progress": len(progress)}
                print(json.dumps(out), flush=True)


anyio.run(main)
