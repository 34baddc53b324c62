"""Reporting: aggregate finished runs into tables, statistics and plots (`dt-attn report`)."""
