"""What bff tells its operators: log lines as text or JSON (``logs``) that never carry a credential (``redaction``).

Metrics and traces join this package; ``prometheus_client`` and ``opentelemetry`` are imported nowhere else.
"""
