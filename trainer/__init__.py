"""jaxtx.trainer."""
