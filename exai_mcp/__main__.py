from exai_mcp.cli import main

main()
