# Salt external pillars of saltext-fleet (found through the salt.loader entry point).
