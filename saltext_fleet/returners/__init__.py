# Salt loader directory: Salt itself imports the modules in here (files starting with "_" are skipped).
