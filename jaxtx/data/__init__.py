"""jaxtx data: reading users' files (CSV, JSON Lines, Parquet) into Arrow and
writing split Parquet shards with a quarantine for rows that cannot be read.

A library: it imports only ``jaxtx.core``.
"""
