"""The one thing pyproject.toml cannot say stably: the C loop of codes <-> characters (sodadata/encode/_codes.c).

Optional: without a C compiler the install still succeeds and sodadata.encode.codes runs its NumPy path (same output,
a few microseconds more per call); ``sodadata.encode.codes.NATIVE`` says which one is in use.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sodadata.encode._codes", sources=["sodadata/encode/_codes.c"], optional=True)])
