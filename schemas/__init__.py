"""Wire contracts: the events storefronts send, the rows we emit, the catalog files."""
