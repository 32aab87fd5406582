"""kakeya_lib: KV-cache codecs (KakeyaTurbo and baselines) with real byte accounting.

Layers, each calling only the ones before it: ``backend``/``bitpack``/``floats``/``container``
→ ``stages`` → ``codecs`` → (later) ``llm`` harness → experiments → report.
"""

__version__ = "0.1.0"
