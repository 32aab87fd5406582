"""kakeya_lib: KV-cache codecs (KakeyaTurbo and baselines) with real byte accounting.

Layers, each calling only the ones before it: ``backend``/``bitpack``/``floats``/``container``
→ ``stages`` → ``codecs`` → ``llm`` harness → experiments → report.
"""

import os

# The codecs' matrices are small (a block is ~1024 x 64): numpy's threaded OpenBLAS gains nothing
# on them, and when torch's own threads share the cores its spinning workers made one key-block
# encode 45x slower (5.5 s vs 0.12 s on 2 cores). One BLAS thread unless the user chose otherwise;
# this only takes effect when kakeya_lib is imported before numpy, as the CLI does.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
