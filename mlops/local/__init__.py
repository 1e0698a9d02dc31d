"""The local platform: jobs run as subprocesses on this machine, models served from it."""
