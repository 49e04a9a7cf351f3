"""The inspector: a page `adcast serve` serves at /ui, for the people who run adcast.

User view: a user's live prediction with advertiser names, the other slots' beside it (what
differs marked), the history the stream tier holds and the prompt the engines see. Fleet view:
the slot pointer and writers, freshness and LLM calls per event from the workers' metrics, dead
letters, consumer lag.

  views     what the page shows, shaped from records (pure: no I/O)
  sources   where it comes from: Redis, the stream tier's history page, the workers' metrics,
            Kafka (offsets, advertiser names)
  routes    the aiohttp routes, the token and the page's headers
  static/   the page itself: HTML, CSS and a small script, shipped as package data
"""
