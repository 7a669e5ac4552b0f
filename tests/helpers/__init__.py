"""Test helpers shared by several test packages — the one home of anything a test module imports from another
directory (a test module imports helpers from here, never from another test module or another package's
conftest).  Among them: ``farm`` (free ports, the simulated-farm fixtures), ``kit`` (station CLI, audit facts),
``audit`` (a hand-moved clock, certificates, a started unit), ``boards`` (looking at a board from outside, order
files), ``technician`` (the window's key presses), ``line_servers`` (printers, MES), ``pki_tokens`` (SoftHSM2
tokens), ``postgres`` (the fleet's PostgreSQL), ``service`` (a station service), ``fake_link`` (recorded
transcripts)."""
