"""Test and benchmark support: the ray-cast scene renderer, random-weight models, test doubles.

Nothing in the core (segmentation, geometry, tracking, pipeline) imports this package; the
demo, the tests and the benchmarks do.
"""
