"""sdnagent-api: tapdb's intent over REST/JSON, for clouds' portals and people.

It judges and writes through the service layer tapctl uses (``tapdb/ops.py``), so
the rules, quotas, race-safety and one-line reasons are the same; each request
is authenticated by a bearer token (:mod:`.identity`) and every write, accepted
or refused, is recorded (:mod:`.audit`).
"""
