"""The data-plane benchmark: ``make bench`` (a few minutes, targets enforced) and ``make bench-smoke``
(seconds, every part exercised, only correctness checked; CI runs it).

``python -m tests.bench [--smoke] [--compare-with DIR]`` runs, on loopback:

* an nginx upstream answering a fixed ~300-byte JSON document, and an nginx reverse proxy in front of it: the
  baseline every bff number is divided by, measured in the same run (``nginx.py``);
* ``bff serve`` with a Redis store, one worker and then two, with a real session logged in through an OpenID
  Provider (the reference IdP, ``bff_devtools.devidp``, or the suite's ``TestProvider``: ``idp.py``;
  ``servers.py``), loaded by ``wrk`` with 32 keep-alive connections (``wrk.py``); CPU per request is the server's
  utime+stime delta over the run from ``/proc`` (``system.py``);
* the realistic case (``sessions.py``): one session against 10,000 logged-in sessions, requests spread uniformly
  and Zipf-like over them, three bffs of this tree on the server core at the same time over precomputed cookie
  tables, the ratio of their CPU per request (target: at most 1.2x); ``--only sessions`` runs just these rows (and,
  with ``--compare-with``, the paired one-session comparison);
* where the machine has fewer than 4 cores (so two workers cannot get two of their own beside the load): a 1-worker
  and a 2-worker bff loaded at the same time, every worker capped at 0.4 of a core by a cgroup CPU quota, which is
  how the scaling target is measured there (``budget.py``);
* a WebSocket echo through a ``websocket = true`` route: messages per second and bff's CPU per message, the load
  from this process (``websocket_echo.py``);
* the refresh storm: 500 concurrent requests on one session whose access token just expired (``storm.py``);
* Redis memory per session (25,000 sessions, which fill Redis's hash tables as 100,000 do), and lookups and expiry
  of that many sessions without an O(N) command (``redis_memory.py``);
* the peers a team would pick instead, with the same upstream, Redis, IdP and load, each checked before it is timed
  (the body byte for byte, a bearer the IdP accepts at the upstream, no token without the session cookie):
  Apache httpd + mod_auth_openidc and a Node BFF (express, express-session in Redis, openid-client,
  http-proxy-middleware), one process each on the server core (``peers/``); a peer whose packages are missing is
  skipped, saying so. Their target: bff's CPU per request in the realistic case (10,000 sessions, uniform) at most
  0.35x each peer's, bff's row measured alone like theirs, by the same wrk script, in interleaved rounds
  (``peers/compare.py``);
* the worker's memory per idle keep-alive connection (2,000 held open; target <= 10 KB) and per active session, and
  the usual wrk load while those 2,000 stay open (its p99) (``memory.py``);
* how long ``bff serve`` takes to answer ``/readyz`` 200;
* telemetry's cost: this tree's bff with metrics and the JSON access log on and the same bff with them
  off, loaded at the same time on the server core, a few rounds: the median ratio of their CPU per request
  (``TELEMETRY_ROWS``, five rounds; metrics alone, the access log alone and tracing at 100 % sampling, whose figures
  hold steady, are loaded together beside one plain bff, three rounds). ``--only telemetry`` runs these rows but
  tracing (with
  ``--rounds`` and ``--duration``), in about a minute and a half; ``python -m tests.bench.hook_instructions``
  counts the CPU instructions of the observers' hooks per request under callgrind (noise-free, no server);
* the edge limits' cost (``limits.py``): this tree's bff as served and the same bff with the edge limits' per-request
  checks off (``limits_off.py``, a launcher the product never runs), loaded at the same time, the telemetry rows'
  way; no target. ``--only limits`` runs just it; ``python -m tests.bench.protocol_instructions`` counts the
  protocol's instructions per request with the limits on and off.

``--only peers`` runs nginx, bff's one-worker rows, the peers and the worker's memory (a few minutes). Every
part's elapsed time is printed at the end (``parts.py``), and the whole run is held to 8 minutes (smoke: 120 s,
reported only).

With at least two cores the server under test gets a core of its own (``taskset``); wrk, the upstream, Redis and
the IdP share the others. ``report.py`` prints the table and the targets; the exit status is non-zero when a
correctness check fails (both modes) or a performance target fails (full mode only).
"""
