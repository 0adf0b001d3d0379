"""HTTP endpoints under ``/bff`` (one module per endpoint, as Duende BFF keeps one class per endpoint), plus the
health probes. Each endpoint is a class whose constructor receives what it needs; none reads ``app.state``."""
