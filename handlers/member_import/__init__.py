"""Bulk member import from CSV or XLSX: reading the file, validating rows, applying them in batches."""
