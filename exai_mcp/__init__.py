"""exai-mcp: an MCP server that gives AI assistants an expert second opinion."""

# The one place the version is written: the build reads it from here (pyproject's
# [tool.hatch.version]). A literal, not importlib.metadata.version(): that lookup scans the
# installed distributions at every start and keeps ~0.7 MiB.
__version__ = "0.1.0"
