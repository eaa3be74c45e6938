"""What training and inference share: checkpoints (format, writer, reader), run folders, device and thread setup, progress."""
