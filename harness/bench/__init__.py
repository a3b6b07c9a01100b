"""Benchmarks of the harness itself (``staircase bench scorer``) and of reference points
(``staircase bench oracle``)."""
