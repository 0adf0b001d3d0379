"""Server-side sessions: a byte-level store seam (``store``), its implementations (``memory_store``,
``redis_store``) and the ``SessionManager`` above them that owns keys, serialisation, encryption, expiry and indexes."""
