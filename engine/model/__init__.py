"""The network: weight reading and conversion, the Whisper net, the inference runtime and its step graphs."""
