"""The demo and local tools.

The scripted demo, its live console, the post generator, the embedded broker and replay.
"""
