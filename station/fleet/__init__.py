"""The fleet: PostgreSQL as the system of record of every station, and how a station talks to it.

* :mod:`station.fleet.schema` — the central schema as a numbered list of migrations, the roles, station
  registration (``station fleet init``);
* :mod:`station.fleet.connection` — every connection and statement with a deadline (a stopped, paused or
  unreachable server costs at most a few seconds, never a hang);
* :mod:`station.fleet.forwarder` — store-and-forward: a background thread sends the local audit journal's
  events in order, idempotently by (station, sequence number), and reports its backlog;
* :mod:`station.fleet.guard` — the cross-station checks of the guard step (serial claimed, host key, public key)
  and the offline policy;
* :mod:`station.fleet.queries` — fleet verify, conflicts, the comparison of a local log with the fleet, the
  quality leads' views and exports;
* :mod:`station.fleet.cluster` — a private PostgreSQL cluster under a directory (``station fleet demo``, tests).

The local SQLite log stays the station's working copy: the line never stops because the network did. Nothing
here is imported unless ``[fleet]`` is configured, so a station without a database never loads psycopg.
"""
