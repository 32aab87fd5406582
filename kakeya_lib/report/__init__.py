"""Render helpers: LaTeX macros and tables, markdown tables for the book, figure style and saving.

Render notebooks call these to turn store rows into ``paper/generated/`` files; the paper
``\\input``s them and the book includes the markdown twins, so neither types a number.
"""

from .figures import save_figure, setup_style
from .latex import Column, camel, fixed, latex_escape, write_macros, write_table

__all__ = ["Column", "camel", "fixed", "latex_escape", "save_figure", "setup_style", "write_macros", "write_table"]
