"""Rows, shards and records: documents, Parquet shards, made_by, where shards are.

What a run writes, and how every reader finds it again (output roots and published copies).
"""
