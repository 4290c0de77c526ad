"""jaxtx.pipelines."""
