"""The recorder: finds finished MixMonitor WAVs in the spool, encodes them
(pydub/ffmpeg), verifies and archives them, and links them to their calls."""
