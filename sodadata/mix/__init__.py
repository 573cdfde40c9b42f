"""Shards -> the token stream a trainer reads: mixtures, the tokenizer, the stream."""
