"""The Omni transformer: one token stream over video, audio, text and actions."""
