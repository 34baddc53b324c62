"""Entry points: one module per `dt-attn` subcommand that trains, evaluates, sweeps or inspects policies."""
