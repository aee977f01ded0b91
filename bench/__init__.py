"""Benchmark harness: accuracy (WER) and speed of our engine against faster-whisper.

Kept apart from engine/ so benchmark-only dependencies (faster-whisper, jiwer,
whisper-normalizer) never become runtime requirements of the server.
"""
