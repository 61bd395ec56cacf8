"""exai-mcp: an MCP server that gives AI assistants an expert second opinion."""

# The one place the version is written: the build reads it from here (pyproject's
# [tool.hatch.version]). A literal, not importlib.metadata: that lookup costs every start
# ~40 ms and ~0.7 MiB of imports.
__version__ = "0.1.0"
