"""An MCP server built with the official Python SDK, for countersign's tests.

Three tools: `balance` (read-only), `transfer` (moves money) and
`close_account` (irreversible). Every run of a tool is appended to the
ledger file (one JSON line), so a test can count how often the server ran
a call. Listens on 127.0.0.1 on a free port and prints `PORT <n>` once ready.

usage: server.py LEDGER [--port N] [--stateless] [--json]
"""

import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

ledger_path = sys.argv[1]
stateless = "--stateless" in sys.argv
json_response = "--json" in sys.argv
port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0

server = MCPServer("bank")


def run(tool, **args):
    with open(ledger_path, "a") as f:
        f.write(json.dumps({"tool": tool, "args": args}) + "\n")


@server.tool()
def balance(account: str) -> str:
    """The balance of an account (read-only)."""
    run("balance", account=account)
    return f"account {account} holds 1250.00 EUR"


@server.tool()
def transfer(source: str, target: str, amount: float) -> str:
    """Moves money between two accounts."""
    run("transfer", source=source, target=target, amount=amount)
    return f"moved {amount:.2f} EUR from {source} to {target}"


@server.tool()
def close_account(account: str) -> str:
    """Closes an account for good (irreversible)."""
    run("close_account", account=account)
    return f"account {account} is closed"


async def main():
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        json_response=json_response,
        host="0.0.0.0",  # no DNS-rebinding check: calls come through a proxy
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])


anyio.run(main)
