"""Data migrations of the bundled reference schema (stevedore plugins).

The column syncs are declared here, once, and used by both the expand
revision that installs the triggers and the data migration that moves the
rows written before them.
"""
