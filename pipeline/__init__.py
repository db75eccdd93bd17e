"""The data plane: shard sources, archive format, Ray stages, restore, verify and the CLI."""
