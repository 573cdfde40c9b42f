"""Running a recipe: one task (pipeline), all on Dask (runner), the recipe CLI."""
