"""Writers turn planned samples into files. Each writes to a temporary name and renames when complete."""
