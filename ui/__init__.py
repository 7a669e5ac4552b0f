"""The technician's window: a thin Qt layer over the station's core.

Views and dialogs live here; everything the station *does* (validate a serial, run a unit, sign a
certificate, lay out a label, check the admin PIN) is in :mod:`station`.  :mod:`ui.bridge` is the
one place where the core's plain callbacks become queued Qt signals.
"""
