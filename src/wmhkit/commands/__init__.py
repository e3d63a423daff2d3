"""Subcommands of the wmhkit CLI, one module each, each exposing register(subparsers)."""
