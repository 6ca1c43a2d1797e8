"""What can go wrong with a recording, told in one line."""

from __future__ import annotations

from tracking.errors import TrackingError


class RecorderError(TrackingError):
    """A recorder problem the user can act on."""


class FfmpegMissing(RecorderError):
    """ffmpeg (or one of its encoders) is not installed where the settings say."""


class BadRecording(RecorderError):
    """The spool file cannot be archived as it is: empty, truncated, corrupt or unsupported."""


class NoAudio(BadRecording):
    """The WAV holds only its header: the call was never connected, so there is nothing to keep."""


class EncodeFailed(RecorderError):
    """ffmpeg could not turn the source into the archive format, or the archive could not be written."""


class VerifyFailed(RecorderError):
    """The archive does not decode, or decodes to a different duration than its source."""


class StillGrowing(RecorderError):
    """The source changed while it was being encoded: it is not finished yet."""
