"""Moved to :mod:`tests.helpers.kit`; this name stays until the branches written alongside the move are merged
(a test written against ``tests.soak.kit`` keeps importing).  New code imports ``tests.helpers.kit``."""

from tests.helpers.kit import *  # noqa: F403
