"""flash-linear-attention (FLA) host integration for `adapters`."""
