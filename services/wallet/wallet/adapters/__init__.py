"""Storage of the wallet: ORM tables, repositories, the SQLAlchemy unit of work."""
