"""The model catalog and the choice of upstream (order, retries)."""

from relaygate.routing.catalog import Catalog, CatalogModel
from relaygate.routing.router import Opened, open_upstream

__all__ = ["Catalog", "CatalogModel", "Opened", "open_upstream"]
