"""The data hub: Modbus polling, the durable outbox and the MQTT publisher."""
