#!/bin/sh
# The `certs` one-shot of docker/compose.yaml, run as root: `smpc certs ARGS...` writes ca.pem and
# one folder per node, each of which is that node's own volume; the folders are then handed to
# the user the nodes run as (keys stay mode 0600), and the CA's key is deleted.
set -eu
smpc "$@"
rm -f /certs/ca.key
chown -R smpc:smpc /certs
