"""Streaming generation: the rollout, sessions, events, pacing."""
