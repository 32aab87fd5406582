"""Language-model side of the artifact: models, pre-RoPE KV capture, evaluation corpora."""
