"""Transports: how a client reaches the server built in `exai_mcp.server`.

Each adapter turns its wire into the (read, write) message streams `Server.run` takes, and
owns what only the wire can see, such as malformed input.

    stdio.py     one session over stdin/stdout (`serve_stdio`, what `exai-mcp` runs)
    jsonrpc.py   what a line is: a JSON-RPC message, or the error replies it is owed
"""
