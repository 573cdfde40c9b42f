"""Audio -> Mimi codes -> characters: audio in, the codec, codes as characters.

The C loop of codes <-> characters (_codes.c, built at install, optional) and its NumPy twin live here.
"""
