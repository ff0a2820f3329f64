"""Credentials and keys: derived keys, users, tokens, certificates, TLS."""
