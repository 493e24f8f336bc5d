"""What several engine families use: export validation, the auto_exclude search's shared pieces."""
