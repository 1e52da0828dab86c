"""The JSON admin API (``/admin/v1``): thin routes over :mod:`relaygate.accounts`."""
