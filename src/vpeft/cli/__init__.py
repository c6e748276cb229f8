"""The `vpeft` command line: `vpeft.cli.main.app`, one module per command."""
