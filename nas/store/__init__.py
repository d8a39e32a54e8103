from nas.store.store import Store, StoreError, default_storage_url

__all__ = ["Store", "StoreError", "default_storage_url"]
