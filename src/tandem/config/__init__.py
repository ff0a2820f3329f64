"""Configuration: the native YAML models and keepalived.conf compatibility."""
