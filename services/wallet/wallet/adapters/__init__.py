"""Storage of the wallet: Core tables, repositories, the SQLAlchemy unit of work."""
