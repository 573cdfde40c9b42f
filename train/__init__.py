"""A thin JAX consumer of sodadata's mixture stream: a SODA-family decoder trained data- and FSDP-parallel.

``python -m train --help``; docs/training.md. Modules: ``config`` (model sizes, settings), ``model`` (decoder),
``sharding`` (mesh, shardings, global batches), ``schedule`` (LR schedule, --extend), ``step`` (optimizer,
jitted step), ``checkpoint``,
``data`` (the stream), ``trainer`` (the loop), ``cli``.
"""
