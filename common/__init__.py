"""The floor every other package stands on: user-facing errors, the rank-aware console,
atomic file writes and the one-writer-per-folder run lock. Imports nothing of the project."""
