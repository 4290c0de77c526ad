"""jaxtx.components."""
