"""The wire: the event envelope and codec, the payload schema language, every event type."""
