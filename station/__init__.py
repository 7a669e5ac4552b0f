"""The provisioning station's core: everything below this package runs without Qt.

The flow of data is one way: scan -> unit -> steps over a device link -> CSR -> CA ->
certificates back -> audit.  The UI (package ``ui``) only watches events and sends commands.
"""

__version__ = "0.1.0"
