"""Network I/O for VRRP: raw and UDP transports, virtual IPs, the asyncio driver."""
