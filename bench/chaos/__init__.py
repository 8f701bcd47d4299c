"""``make chaos``: kill -9 every part of the service in turn, under a deterministic load, and count what was lost.

Modules: ``topology`` (which processes, their settings), ``launcher`` (start / kill / restart / stop them by pid),
``load`` (the deterministic load: REST orders and NATS signals, one in flight per pair), ``kills`` (the schedule
and how each victim is found), ``report`` (what the streams say happened: the table and the last line), ``run``
(all of it, bounded in time). See the README, section "Chaos run".
"""
