"""Alembic's entry point for Hangjia's migrations. No alembic.ini: hangjia.app.db.schema builds the configuration,
opens the connection and its transaction, and passes the connection in the configuration's attributes."""

from alembic import context

from hangjia.app.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("Run Hangjia's migrations through hangjia.app.db.schema (`hangjia db upgrade`).")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,  # also gives the migrations' unnamed constraints the models' naming convention
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it (batch_alter_table)
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
