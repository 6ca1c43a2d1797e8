"""Speech to text on archived recordings (faster-whisper on the CPU): engine, queue passes, service."""
