"""One module per `tilewarp` subcommand."""
