"""Imported last by the fork server (see FORKSERVER_PRELOAD): what every worker it forks inherits is frozen.

``gc.freeze`` moves every object the server has imported into the collector's permanent generation, so a
worker's collections never walk them — nor touch, and so copy, the pages they live on (the documented use
before fork).  A worker's own objects are collected as usual.
"""

from __future__ import annotations

import gc

gc.collect()
gc.freeze()
