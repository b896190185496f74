"""Training machinery around nerfstudio's own: fixes for its traps and the crash-safe, resumable trainer."""
