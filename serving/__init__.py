"""jaxtx.serving."""
