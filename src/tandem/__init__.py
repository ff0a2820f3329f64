"""Tandem: a high-availability industrial edge data hub."""

__version__ = "0.1.0"
