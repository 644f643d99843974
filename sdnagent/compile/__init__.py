"""Pure functions: intent + local inventory -> desired ports, Mirrors and flows.

Nothing here does I/O or imports the tapdb or switch layers.
"""
