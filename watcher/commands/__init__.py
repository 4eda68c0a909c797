"""One module per ``turingwatch`` subcommand (see ``watcher.cli.COMMANDS``)."""
