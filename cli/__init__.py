"""The ``newswatch`` command line: one module per package's commands, and :mod:`.main`.

This is the only package that imports every other one.
"""
