"""What every trainer shares: mesh and sharding, checkpoints, logging, the loop toolkit."""
