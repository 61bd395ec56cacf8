"""The layers every tool call passes through; `pipeline` shows their order."""
