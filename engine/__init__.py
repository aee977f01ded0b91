"""Async Engine speech library: audio, Whisper models, decoding, alignment and formatting."""
