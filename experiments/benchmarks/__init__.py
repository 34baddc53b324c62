"""Benchmarks: one module per `dt-attn bench-*` subcommand (and `dt-attn parity`), each writing its
figures."""
