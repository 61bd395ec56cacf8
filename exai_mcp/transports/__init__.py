"""Transports: how a client reaches the server built in `exai_mcp.server`.

Each adapter turns its wire into the (read, write) message streams `Server.run` takes, and
owns what only the wire can see: malformed input, and how much a client may leave unanswered.

    stdio.py     one session over stdin/stdout (`serve_stdio`, what `exai-mcp` runs)
    jsonrpc.py   what a line is: a JSON-RPC message, or the error replies it is owed
    intake.py    EXAI_SESSION_MAX_PENDING: the unanswered requests of one session, bounded
    http.py      `serve --http`: MCP streamable HTTP, the REST API and /health, one pipeline
    attach.py    EXAI_DAEMON: a stdio session whose calls the daemon answers (the shim)
    daemon.py    finding the daemon, and in spawn mode starting exactly one
"""
