"""Codec stages, one module each: pure array functions over ``xp`` (numpy or CuPy).

Each stage takes its arrays and the array module ``xp``; random draws come from
:func:`kakeya_lib.backend.host_rng` so both backends see the same numbers. No stage imports
torch or transformers.
"""
