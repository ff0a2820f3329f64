"""High availability of the hub: role gate, standby modes, peer link, fencing."""
