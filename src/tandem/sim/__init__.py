"""A Modbus TCP PLC simulator for the demo, the tests and the benchmarks."""
