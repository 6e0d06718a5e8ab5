"""The one error type of the media path."""


class VideoError(ValueError):
    """The input cannot be used as a video; `code` is machine-readable, the message is for people.

    Codes: not_found (a path), not_a_video, corrupt, no_video_stream, unsupported_codec, empty, too_large,
    too_long, timeout (decoding); bad_option, too_many_windows (the views asked for)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
