"""Custom language models: the toolkit that builds them, shallow fusion, word_boost and domain terms."""
