"""Checkpoint conversion: architectures, Hugging Face import/export, consolidation."""
