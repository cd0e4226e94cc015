"""The service layer: keyword-only data-access functions over a SQLAlchemy ``Session``.

Routes and the bootstrap CLI both call these; they never commit (the caller owns the
transaction) and raise ``connguard.db.errors`` exceptions, which the API maps to NeutronError.
"""
