"""Substitution generation and verification (TASO's core)."""
