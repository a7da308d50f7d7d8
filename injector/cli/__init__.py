"""The command line: `mesher-injector` and its subcommands. Wires the other packages."""
