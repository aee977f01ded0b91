"""The search: logit rules, beam and sampling, the temperature fallback, a window's decode loop and alignment."""
