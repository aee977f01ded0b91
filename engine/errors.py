"""Typed engine errors.

Every failure the engine reports to a client carries a stable snake_case
``code`` so that the HTTP layer and callers can branch on it without parsing
human-readable messages, which are free to change.
"""


class EngineError(Exception):
    """Base class for errors the engine turns into client-facing responses."""

    code: str = "engine_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AudioDecodeError(EngineError):
    """The input bytes are not audio, or are corrupted or truncated."""

    code = "undecodable_audio"


class EmptyAudioError(EngineError):
    """The input is zero-length or decodes to zero samples."""

    code = "empty_audio"


class ModelNotInstalledError(EngineError):
    """The requested model is not present on this host."""

    code = "model_not_installed"


class InvalidParameterError(EngineError):
    """A request parameter is out of range or malformed."""

    code = "invalid_parameter"


class MonoWithDualChannelError(EngineError):
    """Dual-channel transcription was asked of a file with one channel."""

    code = "mono_with_dual_channel"


class AudioTooLongError(EngineError):
    """The audio to transcribe is longer than the caller allows."""

    code = "audio_too_long"
