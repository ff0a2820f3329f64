"""Sans-I/O VRRP: the packet codec and the state machine, no sockets, no clocks."""
