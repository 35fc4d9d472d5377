"""alexnet train commands (registered on the main group by importing this module)."""
