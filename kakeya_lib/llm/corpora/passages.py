"""Deterministic passage cutting from one split of a corpus (:func:`passages`; the rules are in
the package docstring)."""

from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Collection, Sequence

import numpy as np

from ...errors import InputError
from .documents import Corpus
from .sources import load_corpus
from .splits import CALIB_FRACTION, split_rows

_PREVIEW_TOKENS = 48


@dataclass(frozen=True)
class Passage:
    """One evaluation or calibration window.

    Attributes
    ----------
    passage_id : str
        ``corpus:split:s<seed>:L<ctx_len+n_eval>:p<index>``; unique for one tokenizer.
    corpus, split : str
        Corpus name and split (``eval`` or ``calib``) it was cut from.
    seed, index : int
        The seed given to :func:`passages` and the passage's position in the returned list.
    doc_id : str
        Document holding the first text token (after the BOS token, if any).
    doc_offset : int
        Token offset of that first text token inside its document.
    doc_ids : tuple of str
        Every document the passage touches, in order (more than one when it crosses an EOS).
    input_ids : list of int
        ``ctx_len + n_eval`` token ids; with ``bos`` the first one is the BOS token.
    ctx_len, n_eval : int
        Prefix length (BOS included) and continuation length.
    bos : bool
        Whether ``input_ids[0]`` is a prepended BOS token.
    preview : str
        The decoded first few text tokens, to recognise the passage in logs.
    """

    passage_id: str
    corpus: str
    split: str
    seed: int
    index: int
    doc_id: str
    doc_offset: int
    doc_ids: tuple[str, ...]
    input_ids: list[int]
    ctx_len: int
    n_eval: int
    bos: bool
    preview: str

    @property
    def prefix_ids(self) -> list[int]:
        """The first ``ctx_len`` ids (the context that is prefilled and compressed)."""
        return self.input_ids[: self.ctx_len]

    @property
    def eval_ids(self) -> list[int]:
        """The last ``n_eval`` ids (the continuation that is scored)."""
        return self.input_ids[self.ctx_len :]


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, from an HF tokenizer or a plain callable."""
    try:
        # verbose=False: documents are longer than the model's window on purpose; we cut them.
        enc = tokenizer(text, add_special_tokens=False, verbose=False)
    except TypeError:
        enc = tokenizer(text, add_special_tokens=False)
    ids = enc if isinstance(enc, list) else enc["input_ids"]
    return [int(t) for t in ids]


def _bos_ids(tokenizer: Any, bos: bool) -> list[int]:
    if not bos:
        return []
    tok = getattr(tokenizer, "bos_token_id", None)
    if tok is None:
        raise InputError(
            "bos=True but the tokenizer has no BOS token (e.g. Qwen tokenizers); pass bos=False"
        )
    return [int(tok)]


def _separator_ids(tokenizer: Any) -> list[int]:
    """EOS between documents; a tokenizer without one gets a tokenised blank line instead."""
    tok = getattr(tokenizer, "eos_token_id", None)
    if tok is not None:
        return [int(tok)]
    sep = _encode(tokenizer, "\n\n")
    if not sep:
        raise InputError("the tokenizer has no EOS token and encodes a blank line to nothing; give it an eos_token")
    return sep


class _TokenStream:
    """The documents of one split, tokenised on demand and concatenated with separators."""

    def __init__(self, corpus: Corpus, rows: Sequence[int], tokenizer: Any, sep: list[int]) -> None:
        self._corpus, self._rows, self._tok, self._sep = corpus, list(rows), tokenizer, sep
        self._next = 0  # next position in self._rows to tokenise
        self.tokens: list[int] = []
        self.starts: list[int] = []  # stream offset of each tokenised document's first token
        self.ends: list[int] = []
        self.doc_ids: list[str] = []

    @property
    def exhausted(self) -> bool:
        return self._next >= len(self._rows)

    @property
    def n_documents(self) -> int:
        return len(self._rows)

    def _add_next(self) -> None:
        row = self._rows[self._next]
        self._next += 1
        ids = _encode(self._tok, self._corpus.text(row))
        if not ids:  # nothing to read: no span, and no separator for it either
            return
        if self.tokens:
            self.tokens.extend(self._sep)
        self.starts.append(len(self.tokens))
        self.tokens.extend(ids)
        self.ends.append(len(self.tokens))
        self.doc_ids.append(self._corpus.ids[row])

    def ensure(self, n: int) -> bool:
        """Tokenise further documents until the stream holds ``n`` tokens; False if it cannot."""
        while len(self.tokens) < n and not self.exhausted:
            self._add_next()
        return len(self.tokens) >= n

    def fresh_document(self, cursor: int) -> int | None:
        """Index of the first document starting at or after ``cursor`` (tokenising as needed)."""
        while True:
            i = bisect.bisect_left(self.starts, cursor)
            if i < len(self.starts):
                return i
            if self.exhausted:
                return None
            self._add_next()

    def finish(self) -> None:
        """Tokenise every remaining document of the split."""
        while not self.exhausted:
            self._add_next()

    def locate(self, start: int, end: int) -> tuple[str, int, list[str]]:
        """Document of ``start``, offset inside it, and ids of every document in [start, end).

        A ``start`` on a separator is attributed to the following document with a negative
        offset (-1: the EOS token just before it).
        """
        first = bisect.bisect_right(self.starts, start) - 1
        if start >= self.ends[first]:
            first += 1
        last = bisect.bisect_left(self.starts, end) - 1
        return self.doc_ids[first], start - self.starts[first], self.doc_ids[first : last + 1]


def _check_int(key: str, v: Any, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise InputError(f"{key} must be an integer >= {minimum}, got {v!r}")


def _place_in_free_space(free: list[tuple[int, int]], body: int, rng: np.random.Generator) -> int | None:
    """Draw a window start uniformly among all positions where ``body`` tokens fit in ``free``.

    ``free`` (sorted, disjoint [a, b) intervals) is updated in place; None if nothing fits.
    """
    room = [max(0, b - a - body + 1) for a, b in free]
    total = sum(room)
    if total == 0:
        return None
    r = int(rng.integers(0, total))
    for j, n in enumerate(room):
        if r < n:
            a, b = free[j]
            start = a + r
            free[j : j + 1] = [iv for iv in ((a, start), (start + body, b)) if iv[1] > iv[0]]
            return start
        r -= n
    raise AssertionError("unreachable: r < total")


def _free_intervals(total: int, windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [0, total) not covered by the (non-overlapping) ``windows``."""
    free, pos = [], 0
    for a, b in sorted(windows):
        if a > pos:
            free.append((pos, a))
        pos = max(pos, b)
    if total > pos:
        free.append((pos, total))
    return free


def passages(
    corpus: Corpus | str | os.PathLike,
    tokenizer: Any,
    ctx_len: int,
    n_eval: int,
    n_passages: int,
    seed: int,
    split: str = "eval",
    bos: bool = True,
    exclude_docs: Collection[str] = (),
) -> list[Passage]:
    """Cut ``n_passages`` non-overlapping token windows from one split of a corpus.

    See the module docstring for the placement rule (one passage per document first, then the
    space left over).

    Parameters
    ----------
    corpus : Corpus, str or path-like
        A loaded corpus, or anything :func:`load_corpus` accepts.
    tokenizer : callable
        An HF tokenizer (``tokenizer(text, add_special_tokens=False)["input_ids"]``,
        ``bos_token_id``, ``eos_token_id``, ``decode``), or a callable returning a list of ids.
    ctx_len : int
        Prefix length, the BOS token included when ``bos`` is True.
    n_eval : int
        Continuation length after the prefix (0 for calibration windows).
    n_passages : int
        How many passages; asking for more keeps the first ones unchanged.
    seed : int
        Seeds the document order and the offsets (``numpy.random.default_rng``).
    split : {"eval", "calib"}
        Which document split to read (:func:`split_of`); the two never share a document.
    bos : bool
        Prepend the tokenizer's BOS token (it counts inside ``ctx_len``).
    exclude_docs : collection of str
        Document ids left out of the split before anything is drawn (e.g. the documents a
        calibration artifact was fitted on, so tuning passages never share one with it). When
        non-empty, passage ids carry ``:x`` and a digest of the sorted ids.

    Returns
    -------
    list of Passage
        Each with ``len(input_ids) == ctx_len + n_eval``.

    Raises
    ------
    InputError
        Bad arguments, a split with no documents, or too few tokens (the message gives how many
        the split holds).
    """
    for key, v, minimum in (("ctx_len", ctx_len, 1), ("n_eval", n_eval, 0), ("n_passages", n_passages, 1), ("seed", seed, 0)):
        _check_int(key, v, minimum)
    if bos and ctx_len < 2:
        raise InputError(f"ctx_len must be at least 2 with bos=True (the BOS token is part of it), got {ctx_len}")
    corp = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    rows = split_rows(corp, split)
    excluded = sorted({str(d) for d in exclude_docs})
    if excluded:
        drop = set(excluded)
        rows = [r for r in rows if str(corp.ids[r]) not in drop]
    if not rows:
        raise InputError(
            f"split {split!r} of corpus {corp.name!r} has no documents ({len(corp)} documents in all, "
            f"~{CALIB_FRACTION:.0%} go to 'calib' by id hash); use a corpus with more documents"
        )
    bos_ids = _bos_ids(tokenizer, bos)
    body = ctx_len + n_eval - len(bos_ids)
    rng = np.random.default_rng(seed)
    # Drawn first and always the same size, so the later draws (one per passage, in order) make
    # passage k independent of n_passages.
    order = rng.permutation(len(rows))
    stream = _TokenStream(corp, [rows[i] for i in order], tokenizer, _separator_ids(tokenizer))

    out: list[Passage] = []
    windows: list[tuple[int, int]] = []
    free: list[tuple[int, int]] | None = None  # phase 2 only: what phase 1 left over
    cursor = 0
    for k in range(n_passages):
        doc = stream.fresh_document(cursor) if free is None else None
        start = None
        if doc is not None:
            # Phase 1: a window at a random offset inside the next untouched document (offset 0
            # when the document is shorter than a window; the window then runs on into the next).
            length = stream.ends[doc] - stream.starts[doc]
            start = stream.starts[doc] + int(rng.integers(0, max(0, length - body) + 1))
            if not stream.ensure(start + body):
                start = None
        if start is None:
            # Phase 2: every document has a passage, so the whole split is tokenised; draw from
            # the stretches between the windows cut so far.
            if free is None:
                stream.finish()
                free = _free_intervals(len(stream.tokens), windows)
            start = _place_in_free_space(free, body, rng)
        if start is None:
            raise InputError(
                f"split {split!r} of corpus {corp.name!r} holds only {len(stream.tokens)} tokens "
                f"({stream.n_documents} documents, EOS separators included) with this tokenizer, and "
                f"the stretches left after {k} passage(s) are shorter than one passage of {body} text "
                f"tokens; {n_passages} passages need at least {n_passages * body} tokens. Lower "
                f"n_passages, ctx_len or n_eval, or use a larger corpus"
            )
        end = start + body
        windows.append((start, end))
        cursor = max(cursor, end)
        doc_id, offset, doc_ids = stream.locate(start, end)
        text_ids = stream.tokens[start:end]
        out.append(
            Passage(
                passage_id=f"{corp.name}:{split}:s{seed}:L{ctx_len + n_eval}{exclusion_tag(excluded)}:p{k}",
                corpus=corp.name, split=split, seed=int(seed), index=k,
                doc_id=doc_id, doc_offset=offset, doc_ids=tuple(doc_ids),
                input_ids=bos_ids + text_ids, ctx_len=ctx_len, n_eval=n_eval, bos=bool(bos_ids),
                preview=_preview(tokenizer, text_ids),
            )
        )
    return out


def exclusion_tag(excluded: Sequence[str]) -> str:
    """``""``, or ``":x"`` + 8 hex digits of the excluded document ids (sorted): part of passage ids."""
    if not excluded:
        return ""
    return ":x" + hashlib.sha256("\n".join(excluded).encode()).hexdigest()[:8]


def _preview(tokenizer: Any, ids: Sequence[int]) -> str:
    decode = getattr(tokenizer, "decode", None)
    head = list(ids[:_PREVIEW_TOKENS])
    return decode(head) if callable(decode) else " ".join(map(str, head))
