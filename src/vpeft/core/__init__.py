"""Machinery every method family shares: the wrapper that attaches trainable pieces to frozen
layers, method configs, the install context, the method registry and block selection."""
