"""How the end-to-end tables and figures print stored names (the render's labels, not the cells' keys)."""

from __future__ import annotations

import re


def display_label(name: str) -> str:
    """A series or point name as the tables and figures print it.

    The stored names stay as the sweeps wrote them (they key the cells); the reader sees the
    Hadamard recipe's series ``ours`` as ``ours-5x``, a tuned recipe's own point ``(as given)`` as
    ``(tuned)``, a saliency exponent suffix ``a0.5`` as ``a=0.5`` and the seed's ``Sigma_q`` stage by
    the method section's symbol for the query second moment.
    """
    name = re.sub(r"(^|\.\. )ours(?= |$)", r"\1ours-5x", name)
    name = re.sub(r" a(\d+(?:\.\d+)?)(?= |$)", r" a=\1", name)
    return name.replace(" (as given)", " (tuned)").replace("Sigma_q whitening", "query whitening (M_q)")


# How a paired row was matched (e2e_tables.paired_at_matched_ratio's ``match``), as the table says it.
PAIRED_READ = {"interpolated": "our ratio", "ours interpolated": "peer's ratio", "nearest": "own ratios"}
