"""jaxtx.validation."""
