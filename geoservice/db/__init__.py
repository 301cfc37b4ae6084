"""The database layer: connections and the embedded cluster, the schema (models), migrations.

Everything that talks to PostgreSQL goes through here for its connections; SQL itself lives
with the capability that runs it (``queries.py`` modules), shared fragments in ``db.sql``.
"""
