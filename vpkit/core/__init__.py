"""Contracts: hook specs, plugin manager, registries, specs, the model contract, configs, checkpoints."""
