"""Holds TerraTorch plugin folders (custom_modules_path), one per plugin."""
