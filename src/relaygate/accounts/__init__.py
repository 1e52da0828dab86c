"""The business layer: accounts (they own balances), keys beneath them, people and their
credentials, redemption codes, top-ups and the audit log. Plain async functions over the store;
no HTTP here (``admin/`` and ``console/`` call these)."""
