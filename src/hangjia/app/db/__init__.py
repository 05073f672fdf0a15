"""The web app's database: users, conversations, answers, feedback and reviews (issue 23), and the records the
registry and A/B tests will add (issue 22).

engine.py    the URL a workspace uses (database.url, HANGJIA_DATABASE_URL, else WS/hangjia.db), engine and sessions
models.py    the tables, as SQLAlchemy 2 typed models
schema.py    upgrade / downgrade / current: the schema's version, by the Alembic migrations in migrations/versions/
"""
