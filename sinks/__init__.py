"""KPI stores: PostgreSQL for services, SQLite for the embedded default."""
