"""Northbound servers other than MQTT: the tags as an OPC UA server."""
