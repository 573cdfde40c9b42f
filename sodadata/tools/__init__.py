"""The tools on an output or a recipe: validate, stats, decode, report, push, plan."""
