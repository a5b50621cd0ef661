"""Running: the daemon (`daemon`, its `schedule` and `health`), the one-shot pass of `fpwatch check` (`once`),
the HTTP endpoint (`endpoint`, `metrics`) and the systemd protocol (`systemd`)."""
