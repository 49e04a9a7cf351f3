"""The inference tier: prediction requests in, affinities out (worker), with the engine calls
behind a deadline, retries and bisection (scoring)."""
