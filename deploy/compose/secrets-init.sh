#!/bin/sh
# Makes the compose stack's secrets once, into DIR (the `secrets` volume): Redis's password for the
# ingestor, and Redis's ACL file, which holds only the password's SHA-256. Run by the one-shot
# `secrets-init` service before Redis and the workers start; a later run keeps what exists, so the
# password survives `docker compose down` (not `down -v`). To use a password of your own, write it
# to DIR/redis-password before the first start.
set -eu
dir="${1:?usage: secrets-init.sh DIR}"
umask 077
mkdir -p "$dir"
if [ ! -s "$dir/redis-password" ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/redis-password"
fi
hash="$(tr -d '\n' <"$dir/redis-password" | sha256sum | cut -d' ' -f1)"
printf 'user default on #%s ~* &* +@all\n' "$hash" >"$dir/users.acl"
# Readable by the other containers' users (Redis runs as uid 999, the ingestor as its own).
chmod 0444 "$dir/redis-password" "$dir/users.acl"
