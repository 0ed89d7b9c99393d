"""The full archive: everything visitsdash holds as UTF-8 CSV files in one zip with a manifest,
and back into an empty database (archive_export / archive_import)."""
