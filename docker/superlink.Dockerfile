# The SuperLink: Flower's official image at the project's Flower version, unchanged.
# Its command (TLS, SuperNode authentication, no runtime dependency installation) is in compose.yaml,
# the same flags as deploy/start-superlink.sh.
FROM flwr/superlink:1.42.0
