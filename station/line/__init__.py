"""The line around the station: label printers, serial barcode scanners and the MES hand-off."""
