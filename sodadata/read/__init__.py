"""Where bytes come from: sources, tar streams, catalogs, the recipe interface.

Sources are local paths, hf://, http(s):// and object stores. A recipe (sodadata/recipes/) lists its tasks and
reads each one's items through these modules; completeness compares what a run found with what it asked for and
what the catalog lists, before any work.
"""
