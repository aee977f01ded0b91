"""Audio in: decoding uploaded files, voice-activity windows, the log-mel front end."""
