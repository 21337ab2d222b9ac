"""One module per command group; each `add(sub)` registers its subcommands and handlers."""
