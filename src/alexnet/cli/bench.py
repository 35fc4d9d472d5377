"""alexnet bench commands (registered on the main group by importing this module)."""
