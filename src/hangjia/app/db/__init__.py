"""Hangjia's database: the web app's users, conversations, answers, feedback and reviews (issue 23), and the model
registry's versions, aliases and alias moves (issue 22, app/registry.py).

engine.py    the URL a workspace uses (database.url, HANGJIA_DATABASE_URL, else WS/hangjia.db), engine and sessions
models.py    the tables, as SQLAlchemy 2 typed models
schema.py    upgrade / downgrade / current: the schema's version, by the Alembic migrations in migrations/versions/
"""
