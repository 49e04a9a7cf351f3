"""A model's life in the store: roll a new slot out from the stream state, compare slots online.
The slot pointer's own operations (promote, retire) are in adcast.store.slots."""
