"""Credentials and keys: users, tokens, derived keys, certificates."""
