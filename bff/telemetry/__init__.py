"""What bff tells its operators: log lines as text or JSON (``logs``) that never carry a credential (``redaction``);
the per-request seam (``exchange``) and its observers: request ids (``request_ids``), HTTP metrics
(``http_metrics``), the access log (``access_log``); the metric catalogue (``metrics``) and its Prometheus exposition,
summed over workers (``exposition``). See docs/observability.md.

``prometheus_client`` and ``opentelemetry`` are imported nowhere else.
"""
