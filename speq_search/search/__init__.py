"""The search layer: the only package that imports Ray (lazily, inside the functions)."""

from speq_search.search.runner import RunOptions, resume_search, run_search

__all__ = ["RunOptions", "resume_search", "run_search"]
