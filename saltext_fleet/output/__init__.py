# Salt outputters of saltext-fleet (found through the salt.loader entry point).
