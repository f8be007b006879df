# A SuperNode (one per institution): Flower's official image at the project's Flower version.
# It only relays messages; the ClientApp runs in the institution's app container (app.Dockerfile,
# `--isolation process`), which is where the data is mounted.
FROM flwr/supernode:1.42.0
