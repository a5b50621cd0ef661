"""Deciding, pure: a model's state and one check's observations in, the new state and its events out.

No I/O and no clock: values in, values out (the `detect` layer imports only the standard library and
fpwatch's small shared modules; import-linter enforces it). `conclude()` is the whole decision of a check.
"""
