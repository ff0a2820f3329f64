"""Credentials of a node: derived keys, users, machine tokens, certificates."""
